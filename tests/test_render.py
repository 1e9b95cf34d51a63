"""The status table stays a screenful for a large watchlist, stale symbols first."""

from __future__ import annotations

import io

from rich.console import Console

from crawler.cli.render import STATUS_MAX_ROWS, render_status


def test_a_large_watchlist_shows_stale_symbols_first_and_says_how_many_more() -> None:
    entries = [
        {"symbol": f"S{i}:US", "stale": i % 40 == 39, "pending": False, "age_s": 1.0}
        for i in range(200)
    ]
    out = io.StringIO()
    render_status({"symbols": entries}, Console(file=out, width=200))
    text = out.getvalue()
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("S")]
    shown = [e["symbol"] for e in entries if e["symbol"] in rows]
    assert len(shown) == STATUS_MAX_ROWS
    assert {"S39:US", "S79:US", "S119:US", "S159:US", "S199:US"} <= set(shown)
    assert f"… and {200 - STATUS_MAX_ROWS} more" in text
    assert "symbols: 200 tracked, 5 stale\n" in text


def test_a_small_watchlist_is_shown_whole() -> None:
    entries = [{"symbol": f"S{i}:US", "stale": False, "pending": False} for i in range(3)]
    out = io.StringIO()
    render_status({"symbols": entries}, Console(file=out, width=200))
    assert all(f"S{i}:US" in out.getvalue() for i in range(3))
    assert "more" not in out.getvalue()
