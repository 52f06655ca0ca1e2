"""Display throttling and the dashboard's rate meter, on a fake clock."""

from __future__ import annotations

from naq_nb.notebook.dashboard_view import RateMeter
from naq_nb.notebook.display import Throttle

from helpers import FakeClock


def test_throttle_bounds_a_burst_and_keeps_the_last_change():
    clock, renders = FakeClock(), []
    t = Throttle(lambda: renders.append(clock.now), 0.1, clock, clock.call_later)
    for _ in range(1000):  # 1,000 changes within 0.5 s
        t.poke()
        clock.advance(0.0005)
    assert 5 <= len(renders) <= 7  # about one per 0.1 s, not 1,000
    clock.advance(1.0)
    assert renders[-1] >= 0.5 and not clock.timers  # the trailing render showed the last change
    n = len(renders)
    t.poke(final=True)  # the final state never waits
    assert len(renders) == n + 1

def test_throttle_schedules_one_timer_at_most():
    clock, renders = FakeClock(), []
    t = Throttle(lambda: renders.append(1), 0.1, clock, clock.call_later)
    for _ in range(50):
        t.poke()
    assert len(renders) == 1 and len(clock.timers) == 1

def test_rate_meter_counts_a_sliding_window():
    m = RateMeter(window=10.0)
    for t in (0.0, 1.0, 2.0, 9.0):
        m.add("default", t)
    m.add("gpu", 5.0)
    assert m.rates(9.5) == {"default": 0.4, "gpu": 0.1}
    assert m.rates(11.5) == {"default": 0.2, "gpu": 0.1}  # 0.0 and 1.0 left the window
    assert m.rates(30.0) == {"default": 0.0, "gpu": 0.0}
