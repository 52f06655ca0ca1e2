"""A failing schedule's wait: 0.5 s, doubling, capped at a minute; started over by a success or a reset."""

from naq_nb.core.fire_backoff import MAX_WAIT, FireBackoff
from naq_nb.core.schedules import Schedule


def test_the_wait_doubles_up_to_its_cap_and_a_success_starts_it_over():
    b = FireBackoff()
    s = Schedule(id="s", queue="q", function="f", kind="interval", next_run=100.0, interval=1.0)
    assert b.due(s) == 100.0
    waits = [b.failed("s", 100.0 + k) for k in range(10)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 32, MAX_WAIT, MAX_WAIT, MAX_WAIT] and MAX_WAIT == 60.0
    assert b.due(s) == 109.0 + MAX_WAIT  # pushed past its next run while it waits
    b.succeeded("s")
    assert b.due(s) == 100.0 and b.failed("s", 200.0) == 0.5
    assert b.reset() == ["s"] and b.due(s) == 100.0
