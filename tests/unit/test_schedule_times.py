"""When schedules fire: catch-up after a gap, cron across a DST switch (pure time arithmetic)."""

from __future__ import annotations

from datetime import datetime, timezone

from naq_nb.core.schedules import Schedule, occurrences_due


def test_occurrences_within_grace_all_fire():
    s = Schedule(id="x", queue="q", function="f", kind="interval", next_run=1000.0, interval=1.0, misfire="once")
    due, nxt = occurrences_due(s, 1009.5)                      # a 10 s failover gap: every tick still fires
    assert due == [1000.0 + i for i in range(10)] and nxt == 1010.0

def test_cron_timezone_follows_dst():
    s = Schedule(id="x", queue="q", function="f", kind="cron", next_run=None, cron="0 12 * * *",
                 timezone="Europe/Paris")
    before = datetime(2026, 3, 28, 0, 0, tzinfo=timezone.utc).timestamp()
    first = s.following(before)
    second = s.following(first)
    assert datetime.fromtimestamp(first, timezone.utc).hour == 11    # CET, UTC+1
    assert datetime.fromtimestamp(second, timezone.utc).hour == 10   # CEST after the switch, UTC+2


def test_a_wall_clock_time_the_autumn_switch_repeats_runs_once():
    # 2027-10-31, Paris: 02:30 comes at UTC+2, then again an hour later at UTC+1. A daily 02:30 job ran
    # at both; it runs at the first, then the next day.
    s = Schedule(id="x", queue="q", function="f", kind="cron", next_run=None, cron="30 2 * * *",
                 timezone="Europe/Paris")
    t = s.following(datetime(2027, 10, 30, 12, 0, tzinfo=timezone.utc).timestamp())
    runs = [t]
    for _ in range(2):
        runs.append(s.following(runs[-1]))
    assert [datetime.fromtimestamp(r, timezone.utc).strftime("%m-%d %H:%M") for r in runs] == [
        "10-31 00:30", "11-01 01:30", "11-02 01:30"]


def test_every_time_in_the_repeated_autumn_hour_runs_once():
    # 2026-10-25, Paris: 02:00-02:59 shows at UTC+2, then again at UTC+1. Two times in that hour (and a
    # half-hourly cron) ran at both showings; only back-to-back repeats were caught.
    def runs(cron: str, n: int) -> list[str]:
        s = Schedule(id="x", queue="q", function="f", kind="cron", next_run=None, cron=cron, timezone="Europe/Paris")
        out = [s.following(datetime(2026, 10, 24, 23, 45, tzinfo=timezone.utc).timestamp())]
        while len(out) < n:
            out.append(s.following(out[-1]))
        return [datetime.fromtimestamp(r, timezone.utc).strftime("%d %H:%M") for r in out]

    assert runs("0,30 2 * * *", 3) == ["25 00:00", "25 00:30", "26 01:00"]
    assert runs("*/30 * * * *", 6) == ["25 00:00", "25 00:30", "25 02:00", "25 02:30", "25 03:00", "25 03:30"]


def _counting(s: Schedule) -> list[int]:
    """Count the calendar steps ``occurrences_due`` takes (its cost, independent of the machine)."""
    calls, step = [0], s.following

    def counted(after):
        calls[0] += 1
        return step(after)
    s.following = counted  # type: ignore[method-assign]
    return calls


def test_a_calendar_far_behind_is_stepped_over_not_walked():
    # An every-second cron ten days behind: 864,000 missed occurrences. Walking them blocked the
    # scheduler's loop for 15-30 s (its leader lost the lease); one step over them costs a few calls.
    now = datetime(2027, 1, 11, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    for misfire, fired in (("once", 1), ("skip", 0)):
        s = Schedule(id="x", queue="q", function="f", kind="cron", cron="* * * * * *", next_run=now - 10 * 86400,
                     misfire=misfire, misfire_grace=30.0)
        calls = _counting(s)
        due, nxt = occurrences_due(s, now + 0.5)
        assert len(due) == fired + 30 and calls[0] < 40   # the missed ones as one (or none), then the grace's 30
        assert due[fired:] == [now - 29 + i for i in range(30)] and nxt == now + 1
        if fired:
            assert due[0] == now - 30                     # the latest missed occurrence stands for all
    s = Schedule(id="x", queue="q", function="f", kind="interval", interval=60.0, next_run=now - 365 * 86400,
                 misfire="all")
    calls = _counting(s)
    due, nxt = occurrences_due(s, now)
    assert len(due) == 1000 and due[0] == now - 365 * 86400 and nxt > now and calls[0] < 1010


def test_a_step_the_clock_cannot_take_or_a_far_past_time_does_not_loop():
    # A record stored before intervals had a floor (1e-9 s: t + 1e-9 == t) or with a due time far before
    # year 1 (forged): one check fires a bounded number and moves on; the scheduler's tick cannot hang.
    now = 1.8e9
    tiny = Schedule(id="x", queue="q", function="f", kind="interval", interval=1e-9, next_run=now - 1)
    due, _ = occurrences_due(tiny, now)
    assert len(due) <= 1001
    past = Schedule(id="x", queue="q", function="f", kind="cron", cron="0 * * * *", next_run=-1e20)
    due, nxt = occurrences_due(past, now + 100)            # (now is on the hour)
    assert due == [now] and nxt == now + 3600
