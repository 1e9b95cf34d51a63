"""HistoryRecorder: batched commits as quotes land, a bounded delay, failures counted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crawler.normalizer.schemas import Quote
from crawler.store.history import HistoryStore
from crawler.store.history_recorder import HistoryRecorder
from crawler.utils.exceptions import StorageError

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


def quote(i: int) -> Quote:
    return Quote(symbol=f"R{i:03d}:US", price=Decimal("1.5") + i, source="bright_data",
                 fetched_at=T0 + timedelta(seconds=i))  # fmt: skip


def test_a_full_batch_is_committed_before_close(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    recorder = HistoryRecorder(history, batch_size=10, max_delay_s=3600)
    for i in range(10):
        recorder.add(quote(i))
    reader = HistoryStore(tmp_path / "history")
    try:
        deadline = threading.Event()
        for _ in range(200):  # the writer thread commits the batch without close()
            if reader.count() == 10:
                break
            deadline.wait(0.02)
        assert reader.count() == 10
        recorder.add(quote(10))  # below the batch size and far from its delay: waits
        assert reader.count() == 10
        assert recorder.close() == 11
        assert reader.count() == 11
    finally:
        reader.close()
        history.close()


def test_a_lone_quote_is_committed_after_the_delay(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    recorder = HistoryRecorder(history, batch_size=1_000, max_delay_s=0.05)
    recorder.add(quote(1))
    reader = HistoryStore(tmp_path / "history")
    try:
        done = threading.Event()
        for _ in range(200):
            if reader.count() == 1:
                break
            done.wait(0.02)
        assert reader.count() == 1  # committed with the collection still "running"
        assert recorder.close() == 1
    finally:
        reader.close()
        history.close()


def test_a_failed_batch_is_named_on_close_and_the_rest_still_written(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    history.close()  # writes now fail with StorageError
    recorder = HistoryRecorder(history, batch_size=5, max_delay_s=3600)
    for i in range(7):
        recorder.add(quote(i))
    with pytest.raises(StorageError, match="7 quote\\(s\\) were fetched but not stored"):
        recorder.close()
    recorder.add(quote(99))  # late: ignored, never raises in the fetch worker


# -- issue 23 item 12: a paid quote is on disk before the caller moves on ----------------------


def test_a_durable_quote_is_committed_when_add_returns(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    recorder = HistoryRecorder(history, batch_size=1_000, max_delay_s=3600)
    reader = HistoryStore(tmp_path / "history")
    try:
        recorder.add(quote(1))  # free: waits for its group commit
        assert reader.count() == 0
        recorder.add(quote(2), durable=True)  # paid: on disk now, with what waited beside it
        assert reader.count() == 2
        for i in range(3, 6):
            recorder.add(quote(i), durable=True)
            assert reader.count() == i
        assert recorder.close() == 5
    finally:
        reader.close()
        history.close()


def test_durable_adds_from_many_threads_all_return_committed(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    recorder = HistoryRecorder(history, batch_size=1_000, max_delay_s=3600)
    reader = HistoryStore(tmp_path / "history")
    seen: list[int] = []
    lock = threading.Lock()

    def pay(i: int) -> None:
        recorder.add(quote(i), durable=True)
        count = reader.count()
        with lock:
            seen.append(count)

    try:
        workers = [threading.Thread(target=pay, args=(i,)) for i in range(40)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert len(seen) == 40 and min(seen) >= 1
        assert reader.count() == 40  # every one committed before close()
        assert recorder.close() == 40
    finally:
        reader.close()
        history.close()


def test_a_durable_add_whose_commit_fails_returns_and_counts_it(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history")
    history.close()  # writes now fail with StorageError
    recorder = HistoryRecorder(history, batch_size=1_000, max_delay_s=3600)
    recorder.add(quote(1), durable=True)  # returns: the collection is not held up
    assert recorder.not_stored == 1
    with pytest.raises(StorageError, match="1 quote"):
        recorder.close()
