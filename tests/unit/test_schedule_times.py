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
