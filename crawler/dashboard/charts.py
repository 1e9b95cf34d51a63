"""The symbol page's chart: a history CSV streamed from the daemon, thinned to the page.

    points = chart_points(csv_lines(chunks), rows)   # [[epoch ms, price], ...], oldest first

Memory stays flat whatever the history's size: the CSV is read line by line from the daemon's
chunks, and past `max_points` each bucket of rows keeps only its lowest and highest price.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from crawler.dashboard.board import epoch_ms

__all__ = ["MAX_CHART_POINTS", "chart_points", "csv_lines"]

MAX_CHART_POINTS = 2000


def chart_points(lines: Any, rows: int | None, max_points: int = MAX_CHART_POINTS) -> list[Any]:
    """[[epoch ms, price], ...] oldest first from a history CSV (lines of text), at most about
    `max_points`: when `rows` is larger, each bucket keeps its lowest and highest price (in
    time order), so spikes survive. Memory stays flat whatever the history's size."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return []
    try:
        t_col, p_col = header.index("as_of"), header.index("price")
    except ValueError:
        return []
    per_bucket = max(1, -(-(rows or 0) // max(1, max_points // 2)))
    points: list[Any] = []
    bucket: list[tuple[int, float]] = []
    for record in reader:
        try:
            t, price = epoch_ms(record[t_col]), float(record[p_col])
        except (IndexError, ValueError):
            continue
        if t is None:
            continue
        if per_bucket == 1:
            points.append([t, price])
            continue
        bucket.append((t, price))
        if len(bucket) >= per_bucket:
            points.extend(_extremes(bucket))
            bucket = []
    if bucket:
        points.extend(_extremes(bucket))
    return points


def _extremes(bucket: list[tuple[int, float]]) -> list[list[float]]:
    low = min(bucket, key=lambda point: point[1])
    high = max(bucket, key=lambda point: point[1])
    chosen = sorted({low, high})
    return [[t, price] for t, price in chosen]


def csv_lines(chunks: Iterable[bytes]) -> io.TextIOWrapper:
    """The lines of text in a stream of byte chunks (UTF-8, newlines as they are, for csv)."""
    return io.TextIOWrapper(io.BufferedReader(_ChunkReader(chunks)), encoding="utf-8", newline="")


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (for TextIOWrapper)."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size
