"""Job output split into log lines: whole lines, redraws, bounded memory for a line that never ends."""

from naq_nb.core.context import MAX_LINE, LineSplitter, bounded_line


def test_pieces_become_whole_lines_and_the_rest_waits():
    s = LineSplitter()
    assert s.feed("a") == [] and s.feed("b\nc") == ["ab"] and s.feed("\n\nd") == ["c", ""]
    assert s.take_rest() == "d" and s.take_rest() is None


def test_a_bar_redrawn_in_place_holds_little_memory_and_shows_its_last_state():
    s = LineSplitter()
    for i in range(100_000):
        s.feed(f"\r{i:6d} " + "#" * 60)
        assert s._size <= 4 * MAX_LINE + 70
    assert s.feed("\n") == [f" 99999 {'#' * 60}"]


def test_a_line_that_never_ends_is_cut_and_says_how_much():
    s = LineSplitter()
    for _ in range(10_000):
        s.feed("y" * 100)
        assert s._size <= 4 * MAX_LINE + 100
    line = s.take_rest()
    assert line == "y" * (MAX_LINE - 40) + f"... ({1_000_000 - MAX_LINE + 40:,} more characters)"
    assert bounded_line(line) == line, "a line cut once is not cut again"


def test_windows_line_endings_and_short_lines_pass_as_they_are():
    assert bounded_line("plain") == "plain" and bounded_line("crlf\r") == "crlf" and bounded_line("a\rb") == "b"
