"""The history's rows: the SQLite schema, and a stored row to and from a Quote, a CSV row,
a JSON object and a Parquet row (the export's hot paths read rows, not Quotes); the `since`
/ `until` filter, and times as the CLI writes them (`parse_time_spec`).

A stored row is `COLUMNS` in order: symbol, source, as_of_us, source_as_of_us, fetched_at_us,
price, currency, change, change_pct, open, high, low, previous_close, volume, asset_class,
name, stale, from_cache, bar_interval. Prices are exact Decimal strings, times integer epoch
microseconds (see `crawler.store.history`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from crawler.normalizer.schemas import AssetClass, Quote, utc_now
from crawler.normalizer.units import major_row
from crawler.utils.clock import epoch_us as _to_us
from crawler.utils.clock import from_epoch_us as _from_us

__all__ = [
    "CSV_COLUMNS",
    "HISTORY_FILENAME",
    "INSERT",
    "JSON_ENCODER",
    "KINDS",
    "MIGRATE_TO_2",
    "PARQUET_POSITIONS",
    "SCHEMA",
    "SCHEMA_2",
    "SCHEMA_VERSION",
    "SELECT",
    "Kind",
    "TimeBy",
    "csv_row",
    "major_units_row",
    "parse_time_spec",
    "quote_of",
    "row_of",
    "time_filter",
]

HISTORY_FILENAME = "history.sqlite3"
#: The CSV header, in this fixed order. Timestamps are ISO 8601 UTC, prices exact strings.
CSV_COLUMNS: tuple[str, ...] = (
    "symbol",
    "as_of",
    "source",
    "price",
    "currency",
    "change",
    "change_pct",
    "open",
    "high",
    "low",
    "previous_close",
    "volume",
    "fetched_at",
    "asset_class",
    "name",
    "stale",
    "from_cache",
    "interval",
)

#: Which rows a read asks for: backfilled bars, collected quotes, or both.
Kind = Literal["quotes", "bars", "all"]
#: Which time --since/--until filter on: the quote's own ("quote") or its fetch ("fetched").
TimeBy = Literal["quote", "fetched"]
KINDS: tuple[str, ...] = ("all", "quotes", "bars")

# 1: quotes. 2: `bar_interval` ('' for a collected quote, "1d"... for a backfilled bar) in the
# dedup key, and `bar_windows` (the ranges a backfill has fetched completely).
SCHEMA_VERSION = 2

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS quotes (
    id              INTEGER PRIMARY KEY,
    symbol          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    as_of_us        INTEGER NOT NULL,  -- the dedup key: source timestamp, else fetched_at
    source_as_of_us INTEGER,           -- the source's own timestamp; NULL when it gave none
    fetched_at_us   INTEGER NOT NULL,
    price           TEXT    NOT NULL,
    currency        TEXT,
    change          TEXT,
    change_pct      TEXT,
    open            TEXT,
    high            TEXT,
    low             TEXT,
    previous_close  TEXT,
    volume          INTEGER,
    asset_class     TEXT,
    name            TEXT,
    stale           INTEGER NOT NULL DEFAULT 0,
    from_cache      INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS quotes_symbol_time ON quotes (symbol, as_of_us)",
    "CREATE INDEX IF NOT EXISTS quotes_time ON quotes (as_of_us)",
)
# Version 1 -> 2, in place: existing rows are collected quotes (bar_interval ''), and the dedup
# key gains the interval, so a bar never displaces a quote of the same instant.
MIGRATE_TO_2 = (
    "ALTER TABLE quotes ADD COLUMN bar_interval TEXT NOT NULL DEFAULT ''",
    "DROP INDEX IF EXISTS quotes_dedup",
)
SCHEMA_2 = (
    "CREATE UNIQUE INDEX IF NOT EXISTS quotes_dedup_kind "
    "ON quotes (symbol, source, bar_interval, as_of_us)",
    """
CREATE TABLE IF NOT EXISTS bar_windows (
    symbol       TEXT    NOT NULL,
    bar_interval TEXT    NOT NULL,
    start_us     INTEGER NOT NULL,  -- [start, end): every complete bar in it is stored
    end_us       INTEGER NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS bar_windows_symbol ON bar_windows (symbol, bar_interval)",
)

_COLUMNS = (
    "symbol, source, as_of_us, source_as_of_us, fetched_at_us, price, currency, change, "
    "change_pct, open, high, low, previous_close, volume, asset_class, name, stale, from_cache, "
    "bar_interval"
)
INSERT = f"INSERT OR IGNORE INTO quotes ({_COLUMNS}) VALUES ({', '.join('?' * 19)})"
SELECT = f"SELECT {_COLUMNS} FROM quotes"


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def row_of(quote: Quote) -> tuple[Any, ...]:
    fetched_us = _to_us(quote.fetched_at)
    source_us = None if quote.as_of is None else _to_us(quote.as_of)
    return (
        quote.symbol,
        quote.source,
        fetched_us if source_us is None else source_us,
        source_us,
        fetched_us,
        str(quote.price),
        quote.currency,
        _dec(quote.change),
        _dec(quote.change_pct),
        _dec(quote.open),
        _dec(quote.high),
        _dec(quote.low),
        _dec(quote.previous_close),
        quote.volume,
        None if quote.asset_class is None else quote.asset_class.value,
        quote.name,
        int(quote.stale),
        int(quote.from_cache),
        quote.interval or "",
    )


def quote_of(row: Sequence[Any]) -> Quote:
    return Quote(
        symbol=row[0],
        source=row[1],
        as_of=None if row[3] is None else _from_us(row[3]),
        fetched_at=_from_us(row[4]),
        price=Decimal(row[5]),
        currency=row[6],
        change=_undec(row[7]),
        change_pct=_undec(row[8]),
        open=_undec(row[9]),
        high=_undec(row[10]),
        low=_undec(row[11]),
        previous_close=_undec(row[12]),
        volume=row[13],
        asset_class=None if row[14] is None else AssetClass(row[14]),
        name=row[15],
        stale=bool(row[16]),
        from_cache=bool(row[17]),
        interval=row[18] or None,
    )


def csv_row(row: Sequence[Any]) -> list[Any]:
    """A stored row in `CSV_COLUMNS` order, without building a Quote (the hot export path)."""
    as_of = "" if row[3] is None else _from_us(row[3]).isoformat()
    return [
        row[0],
        as_of,
        row[1],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        _from_us(row[4]).isoformat(),
        row[14],
        row[15],
        int(row[16]),
        int(row[17]),
        row[18],
    ]


def major_units_row(row: Sequence[Any]) -> Sequence[Any]:
    """A stored row with its amounts in the major unit (GBp → GBP...), see `major_row`."""
    return major_row(row, _CURRENCY_AT, _AMOUNTS_AT)


# Positions in a stored row (`_COLUMNS`): the currency, and the amounts of money in it.
_CURRENCY_AT = 6
_AMOUNTS_AT = (5, 7, 9, 10, 11, 12)


#: Where each of `CSV_COLUMNS` is in a stored row (for Parquet: times stay microseconds).
PARQUET_POSITIONS = (0, 3, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 4, 14, 15, 16, 17, 18)


# json.dumps with arguments builds a new encoder per call; one shared encoder is much cheaper.
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_dict(row: Sequence[Any]) -> dict[str, Any]:
    """`Quote.to_json_dict()` of a stored row, without building the Quote (3x faster).

    Exact because the stored TEXT is already ``str(Decimal)`` and parsing it back and printing
    it again gives the same string. `_row_json` checks its keys against the Quote model once.
    """
    data = {
        "symbol": row[0],
        "price": row[5],
        "source": row[1],
        "currency": row[6],
        "change": row[7],
        "change_pct": row[8],
        "open": row[9],
        "high": row[10],
        "low": row[11],
        "previous_close": row[12],
        "volume": row[13],
        "as_of": None if row[3] is None else _from_us(row[3]).isoformat(),
        "fetched_at": _from_us(row[4]).isoformat(),
        "asset_class": row[14],
        "name": row[15],
        "from_cache": bool(row[17]),
        "stale": bool(row[16]),
    }
    if row[18]:
        data["interval"] = row[18]
    return data


def _quote_json_dict(row: Sequence[Any]) -> dict[str, Any]:
    """`Quote.to_json_dict()` of a stored row, through the Quote (the model has changed)."""
    return quote_of(row).to_json_dict()


# A stored row with every column set, the interval too, to read `_json_dict`'s keys off.
_SAMPLE_ROW = ("A:US", "yfinance", 0, 0, 0, "1", "USD", "0", "0", "1", "1", "1", "1", 1,
               "stocks", "A", 0, 0, "1d")  # fmt: skip
# If the Quote model grows or reorders a field, build Quotes rather than drift from it.
_row_json = (
    _json_dict
    if tuple(_json_dict(_SAMPLE_ROW)) == tuple(f.name for f in fields(Quote))
    else _quote_json_dict
)


def time_filter(
    since: datetime | None, until: datetime | None, kind: Kind = "all", by: TimeBy = "quote"
) -> tuple[list[str], list[Any]]:
    """SQL clauses for a kind and a half-open time range on the quote's own time (`by`
    "quote", `as_of`) or on when crawler fetched it ("fetched", `fetched_at`)."""
    clauses: list[str] = []
    params: list[Any] = []
    if kind == "bars":
        clauses.append("bar_interval != ''")
    elif kind == "quotes":
        clauses.append("bar_interval = ''")
    elif kind != "all":
        raise ValueError(f"unknown kind {kind!r}; use all, quotes or bars")
    if by not in ("quote", "fetched"):
        raise ValueError(f"unknown time {by!r}; use quote or fetched")
    column = "fetched_at_us" if by == "fetched" else "as_of_us"
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(_to_us(since))
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(_to_us(until))
    return clauses, params


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$", re.IGNORECASE)
# A year is 365 days ("1y": a year of daily bars).
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}


def parse_time_spec(text: str, now: datetime | None = None) -> datetime:
    """A point in time from the CLI: "2h", "30m", "7d", "1w", "1y", "45s" ago, or an ISO
    date/time.

    "2026-11-01" is midnight UTC, "2026-11-01T12:00" is UTC, "2026-11-01T12:00+01:00" keeps its
    offset; the result is always UTC-aware. Bad input raises ``ValueError`` with a one-line
    message saying what is accepted; the CLI maps it to a usage error (exit 2).
    """
    reference = utc_now() if now is None else now
    match = _DURATION.match(text)
    if match:
        amount_s = int(match.group(1)) * _UNIT_S[match.group(2).lower()]
        try:
            return (reference - timedelta(seconds=amount_s)).astimezone(UTC)
        except (OverflowError, ValueError):  # before year 1: no such time
            raise ValueError(
                f"invalid time {text!r}: {match.group(1)}{match.group(2)} ago is before year 1; "
                "use a shorter duration, e.g. 365d"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use a duration ago like 30m, 2h, 7d, 1w, 1y or an ISO "
            "date/time like 2026-11-01, 2026-11-01T12:00 or 2026-11-01T12:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
