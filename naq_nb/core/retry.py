"""Retry policies: how many times a failed job runs again, and after what delay.

Delays are applied by JetStream's delayed redelivery (``nak(delay=...)``), so a
worker never sleeps on a retry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .errors import ConfigurationError, OptionTypeError

# What a job's message may carry (a worker refuses more as a malformed message, so a call refuses it first).
MAX_RETRIES = 1_000_000
MAX_DELAYS = 1000
MAX_DELAY = 1e8  # seconds (3 years): JetStream takes a nak delay as int64 nanoseconds

__all__ = ["RetryPolicy", "BACKOFF_KINDS"]

BACKOFF_KINDS = ("fixed", "linear", "exponential")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` further attempts after the first failure.

    ``backoff`` is ``"fixed"`` (``delay`` each time), ``"linear"`` (``delay * n``),
    ``"exponential"`` (``delay * 2**(n-1)``), all capped at ``max_delay`` and
    spread by ``jitter`` (a fraction, 0.1 = +/-10%), or an explicit list of delays
    (the last one repeats). ``retry_on`` limits retries to exceptions whose type
    name (``"ValueError"`` or ``"module.Error"``) or any base class name matches;
    ``ignore_on`` (naq's name) never retries those, and wins over ``retry_on``.
    Both take exception classes or their names.
    """

    max_retries: int = 0
    backoff: str | tuple[float, ...] = "fixed"
    delay: float = 0.0
    max_delay: float = 3600.0
    jitter: float = 0.0
    retry_on: tuple[str, ...] = field(default_factory=tuple)
    ignore_on: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_retries, int)
            or isinstance(self.max_retries, bool)
            or not 0 <= self.max_retries <= MAX_RETRIES
        ):
            raise ConfigurationError(f"max_retries must be an int in [0, {MAX_RETRIES:,}], not {self.max_retries!r}")
        if isinstance(self.backoff, str):
            if self.backoff not in BACKOFF_KINDS:
                raise ConfigurationError(
                    f"backoff must be one of {BACKOFF_KINDS} or a list of delays, not {self.backoff!r}"
                )
        else:
            if (
                not isinstance(self.backoff, (list, tuple))
                or not self.backoff
                or not all(_is_seconds(d) for d in self.backoff)
            ):
                raise ConfigurationError(
                    f"explicit retry delays (backoff / retry_delay) must be a non-empty list "
                    f"of finite numbers >= 0, not {self.backoff!r}"
                )
            object.__setattr__(self, "backoff", tuple(float(d) for d in self.backoff))
            if len(self.backoff) > MAX_DELAYS or max(self.backoff) > MAX_DELAY:
                raise ConfigurationError(
                    f"explicit retry delays (backoff / retry_delay) may be at most {MAX_DELAYS:,}, each at most "
                    f"{MAX_DELAY:g} s: {len(self.backoff):,} given, the longest {max(self.backoff):g} s"
                )
        for name in ("delay", "max_delay"):
            if not _is_seconds(getattr(self, name)) or getattr(self, name) > MAX_DELAY:
                raise ConfigurationError(
                    f"{name} (retry_delay) must be a finite number of seconds in [0, {MAX_DELAY:g}], "
                    f"not {getattr(self, name)!r}"
                )
        if not _is_seconds(self.jitter) or self.jitter > 1:
            raise ConfigurationError(f"jitter must be a number within [0, 1], not {self.jitter!r}")
        for name in ("retry_on", "ignore_on"):
            object.__setattr__(self, name, tuple(_type_name(t, name) for t in _as_tuple(getattr(self, name))))

    @classmethod
    def from_naq(
        cls,
        max_retries: int | None = 0,
        retry_delay: float | Sequence[float] | None = 0,
        strategy: object = None,
        **extra: object,
    ) -> "RetryPolicy":
        """naq's ``max_retries`` / ``retry_delay`` (a number or a list of numbers) / ``retry_strategy``.

        naq's ``"linear"`` waits ``retry_delay`` each time (our ``"fixed"``);
        ``"exponential"`` waits ``retry_delay * 2**(n-1)``. A list of delays wins over both.
        """
        max_retries = 0 if max_retries is None else max_retries
        if retry_delay is None:
            retry_delay = 0
        kind = _naq_strategy(strategy)
        if isinstance(retry_delay, (int, float)) and not isinstance(retry_delay, bool):
            return cls(max_retries=max_retries, backoff=kind, delay=float(retry_delay), **extra)  # type: ignore[arg-type]
        if isinstance(retry_delay, Iterable) and not isinstance(retry_delay, (str, bytes, dict)):
            return cls(max_retries=max_retries, backoff=tuple(retry_delay), **extra)  # type: ignore[arg-type]
        raise OptionTypeError(f"retry_delay must be a number or a list of numbers, not {retry_delay!r}")

    def delay_for(self, failure: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows failure number ``failure`` (1-based)."""
        n = max(1, failure)
        if isinstance(self.backoff, tuple):
            base = self.backoff[min(n, len(self.backoff)) - 1]
        elif self.backoff == "fixed":
            base = self.delay
        elif self.backoff == "linear":
            base = self.delay * n
        else:
            # 2.0**1024 overflows a float: past the cap's exponent the cap is the delay.
            base = self.delay * 2.0 ** min(n - 1, 1000) if self.delay else 0.0
        base = min(base, self.max_delay)
        if self.jitter and base:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(0.0, base)

    def should_retry(self, failures: int, exc_type_names: Sequence[str]) -> bool:
        """True if the job should run again after its ``failures``-th failure."""
        if failures > self.max_retries:
            return False
        if self.ignore_on and _matches(self.ignore_on, exc_type_names):
            return False
        return not self.retry_on or _matches(self.retry_on, exc_type_names)

    def to_dict(self) -> dict:
        """The policy as JSON-ready values (stored in the job's ``Naq-Meta`` header)."""
        return {
            "max_retries": self.max_retries,
            "backoff": list(self.backoff) if isinstance(self.backoff, tuple) else self.backoff,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
            "retry_on": list(self.retry_on),
            "ignore_on": list(self.ignore_on),
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> "RetryPolicy":
        """The policy :meth:`to_dict` gave (empty or None: no retries)."""
        if not d:
            return cls()
        backoff = d.get("backoff", "fixed")
        return cls(
            max_retries=d.get("max_retries", 0),
            backoff=tuple(backoff) if isinstance(backoff, list) else backoff,
            delay=d.get("delay", 0.0),
            max_delay=d.get("max_delay", 3600.0),
            jitter=d.get("jitter", 0.0),
            retry_on=tuple(d.get("retry_on", ())),
            ignore_on=tuple(d.get("ignore_on", ())),
        )


def _is_seconds(v: object) -> bool:
    """A real number (not a bool), finite and >= 0."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


NAQ_STRATEGIES = {"linear": "fixed", "exponential": "exponential"}


def _naq_strategy(strategy: object) -> str:
    if strategy is None:
        return "fixed"
    name = str(getattr(strategy, "value", strategy)).lower()  # naq's RETRY_STRATEGY enum or a string
    if name not in NAQ_STRATEGIES:
        raise ConfigurationError(f"retry_strategy must be 'linear' or 'exponential', not {strategy!r}")
    return NAQ_STRATEGIES[name]


def _as_tuple(v: object) -> tuple:
    # naq passes a tuple of classes, but one class or one name is accepted too.
    if v is None:
        return ()
    if isinstance(v, (str, type)):
        return (v,)
    if isinstance(v, (list, tuple, set, frozenset)):
        return tuple(v)
    raise ConfigurationError(f"expected exception classes or names, not {v!r}")


def _matches(names: tuple[str, ...], exc_type_names: Sequence[str]) -> bool:
    """True if the exception's type or any base (full or bare name) is listed."""
    return any(n in names or n.rsplit(".", 1)[-1] in names for n in exc_type_names)


def _type_name(t: object, what: str = "retry_on") -> str:
    if isinstance(t, str) and t:
        return t
    if isinstance(t, type) and issubclass(t, BaseException):
        return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    raise ConfigurationError(f"{what} entries must be exception classes or names, not {t!r}")
