"""The dashboard's pure parts: the token file, the keys, the Host check, chart points, the hub's
folding of events into rows and batches (no daemon: the hub is fed events by hand)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crawler.daemon.client import ControlClient
from crawler.dashboard.charts import chart_points
from crawler.dashboard.hub import Hub, row_from_status
from crawler.dashboard.security import (
    Keys,
    allowed_hosts,
    host_allowed,
    is_loopback,
    load_or_create_token,
)
from crawler.dashboard.security import Tickets as _Tickets
from crawler.utils.exceptions import DataDirError


def test_the_token_is_made_0600_once_and_reused(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / "dashboard.token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(token) >= 32
    assert load_or_create_token(tmp_path) == token


def test_a_token_file_others_can_read_or_a_symlink_is_refused(tmp_path: Path) -> None:
    load_or_create_token(tmp_path)
    path = tmp_path / "dashboard.token"
    os.chmod(path, 0o644)
    with pytest.raises(DataDirError, match="readable by others"):
        load_or_create_token(tmp_path)
    path.unlink()
    (tmp_path / "elsewhere").write_text("x" * 40)
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataDirError, match="symbolic link"):
        load_or_create_token(tmp_path)


def test_the_keys_derive_from_the_token_and_never_equal_it() -> None:
    keys = Keys("t" * 43)
    assert keys.token_ok("t" * 43) and not keys.token_ok("t" * 42) and not keys.token_ok(None)
    assert keys.cookie_ok(keys.cookie_value) and not keys.cookie_ok(keys.csrf)
    assert keys.csrf_ok(keys.csrf) and not keys.csrf_ok(keys.cookie_value)
    assert "t" * 43 not in (keys.cookie_value, keys.csrf)
    assert "SameSite=Strict" in keys.set_cookie() and "HttpOnly" in keys.set_cookie()
    assert Keys("u" * 43).csrf != keys.csrf


def test_only_our_own_host_names_pass() -> None:
    hosts = allowed_hosts("127.0.0.1", 8484)
    for good in ("127.0.0.1:8484", "localhost:8484", "LOCALHOST:8484", "[::1]:8484"):
        assert host_allowed(good, hosts), good
    for bad in (None, "", "127.0.0.1", "127.0.0.1:8485", "evil.example:8484",
                "localhost.evil.example:8484", "127.0.0.1.nip.io:8484"):  # fmt: skip
        assert not host_allowed(bad, hosts), bad
    assert host_allowed("192.168.1.5:8484", allowed_hosts("192.168.1.5", 8484))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def _csv(rows: int) -> list[str]:
    lines = ["symbol,price,as_of\n"]
    for i in range(rows):
        price = 100 + (50 if i == 777 else 0) + i % 7
        lines.append(f"A:US,{price},2026-12-07T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
                     f"{i % 60:02d}+00:00\n")  # fmt: skip
    return lines


def test_chart_points_keep_everything_when_small_and_the_extremes_when_large() -> None:
    small = chart_points(_csv(10), 10)
    assert len(small) == 10 and small[0][1] == 100.0
    big = chart_points(_csv(10_000), 10_000, max_points=200)
    assert len(big) <= 220
    assert max(price for _t, price in big) == 150 + 777 % 7  # the spike survives
    times = [t for t, _p in big]
    assert times == sorted(times)
    assert chart_points([], None) == []
    assert chart_points(["no,columns\n", "1,2\n"], 1) == []


def _status_entry(symbol: str, price: str) -> dict[str, object]:
    return {
        "symbol": symbol, "asset_class": "stocks", "stale": False, "pending": False,
        "last_quote": {"price": price, "currency": "USD", "change": "1", "change_pct": "0.5",
                       "source": "bright_data", "as_of": "2026-12-07T10:00:00+00:00"},
        "market": {"market": "XNYS", "open": True, "next_open": None},
    }  # fmt: skip


def test_the_hub_folds_quotes_into_rows_and_batches_them(tmp_path: Path) -> None:
    hub = Hub(ControlClient(tmp_path / "none.sock"))
    row = row_from_status(_status_entry("A:US", "10"))
    assert row["t"] == 1796637600000 and row["market_open"] is True
    hub.rows = {"A:US": row, "B:US": row_from_status(_status_entry("B:US", "20"))}
    tab = hub.subscribe()
    assert tab is not None
    for price in ("11", "12"):
        hub._apply({"type": "quote", "symbol": "A:US", "price": price, "source": "yahoo_stream",
                    "as_of": f"2026-12-07T10:00:{price}+00:00", "stale": False})  # fmt: skip
    hub._apply({"type": "quote", "symbol": "NOT:US", "price": "1"})  # fetched, not tracked
    hub._apply({"type": "collection_progress", "done": 1, "total": 2, "symbol": "A:US"})
    hub._apply({"type": "breaker", "name": "yfinance", "old": "closed", "new": "open",
                "at": "2026-12-07T10:00:13+00:00"})  # fmt: skip
    hub.flush()
    batch = json.loads(tab.get(1.0) or b"{}")
    assert [r["symbol"] for r in batch["rows"]] == ["A:US"]  # the newest quote of each, once
    assert batch["rows"][0]["price"] == "12" and batch["rows"][0]["source"] == "yahoo_stream"
    assert batch["progress"]["done"] == 1
    assert batch["errors"][0]["what"] == "breaker yfinance"
    assert [p for _t, p in hub.sparks["A:US"]] == [11.0, 12.0]
    hub.flush()
    assert tab.get(0.01) == b""  # nothing new: nothing sent
    tab.close()
    assert hub.tab_count == 0


def test_a_tab_that_falls_behind_is_dropped_not_waited_for(tmp_path: Path) -> None:
    hub = Hub(ControlClient(tmp_path / "none.sock"), tab_queue_size=2, max_tabs=1)
    tab = hub.subscribe()
    assert tab is not None and hub.subscribe() is None  # max_tabs
    for i in range(3):
        hub._apply({"type": "breaker", "name": "x", "old": "closed", "new": str(i)})
        hub.flush()
    assert hub.tab_count == 0 and tab.closed


def test_a_sign_in_ticket_works_once() -> None:
    tickets = _Tickets(ttl_s=60)
    ticket = tickets.issue()
    assert tickets.redeem(ticket) and not tickets.redeem(ticket)
    assert not tickets.redeem(None) and not tickets.redeem("made-up")
    expired = _Tickets(ttl_s=-1)
    assert not expired.redeem(expired.issue())


def test_with_no_tab_for_the_grace_period_the_hub_is_idle(tmp_path: Path) -> None:
    now = [100.0]
    hub = Hub(ControlClient(tmp_path / "none.sock"), idle_grace_s=30, clock=lambda: now[0])
    assert not hub._idle()  # just started: the grace runs from here
    now[0] += 30
    assert hub._idle()
    tab = hub.subscribe()
    assert tab is not None and not hub._idle()
    tab.close()
    now[0] += 29
    assert not hub._idle()  # a reload's gap
    now[0] += 1
    assert hub._idle()
