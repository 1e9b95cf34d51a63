"""Reservations drawn from the ledger a block at a time while paid requests overlap.

A collection runs its paid requests on many workers at once, and each request used to cost
the embedded ledger two SQLite transactions of its own (reserve, then settle or release): about
0.9 ms of CPU per paid quote, more than parsing Bloomberg's page. `ReservationDraw` keeps the
ledger's rules and its money check, and changes only how often it writes:

- A refill reserves as many requests as this process has in flight (at most `max_block`, and
  at most a sixteenth of the room left) in one transaction; the next takers use them from
  memory. With nothing in flight it reserves one, exactly as a single `reserve()` would.
- A settle is queued and written with the next refill, or as soon as nothing of ours is in
  flight any more, together with the release of whatever block is left. A release (money
  coming back) is written at once, with the queue.

So the money never moves ahead of the ledger: a held request counts as spent in the ledger's
files from the moment it is drawn, and every process sharing the directory sees it so. At rest
(no paid request of ours in flight) the files hold exactly what one reservation per request
would have written. A crash leaves the held block open, counted as spent: the ledger's safe
side, over-counting at most one block. This process's own `statistics()` read through
`steady()`, which takes the held block and the queued closes out, so its status and budget
events read the same numbers as before, request by request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, NamedTuple

from crawler.store.ledger.terms import LedgerSnapshot, Reservation
from crawler.utils.exceptions import BudgetExhaustedError

__all__ = ["MAX_BLOCK", "ROOM_SHARE", "Close", "Drawn", "ReservationDraw"]

#: The most requests one refill reserves: the usual number of fetch workers.
MAX_BLOCK: Final = 16
#: A refill takes at most this fraction (1/ROOM_SHARE) of the requests left today, so a block
#: held by one process near the end of the budget leaves the rest to others, and a crash while
#: holding one over-counts little of what was left.
ROOM_SHARE: Final = 16


@dataclass(frozen=True, slots=True)
class Close:
    """A drawn reservation to settle (`billed`) or release, with what the ledger counts."""

    reservation: Reservation
    billed: bool
    #: The symbol (`breakdown()`'s top symbols), or None for a block's unused part.
    label: str | None
    #: When the request was made: `breakdown()` counts it in that hour. None: unused.
    made: datetime | None
    #: The 24-hour window's minute its hold was added to.
    minute: int


class Drawn(NamedTuple):
    """What one `draw` transaction gave: the block (maybe none), its window minute, the
    refusal when a block was asked for and nothing fit (the closes were written even so), and
    how many of the closes found their reservation open."""

    reservations: list[Reservation]
    minute: int
    refusal: BudgetExhaustedError | None = None
    closed: int = 0


#: The backend's one transaction: write `closes`, then reserve up to `want` requests (at most
#: `want`, at least one if any fits; `want` 0: only the closes), the first labelled `label`.
DrawFn = Callable[[int, Sequence[Close], str | None], Drawn]


@dataclass(slots=True)
class _Taken:
    label: str | None
    made: datetime
    minute: int


class ReservationDraw:
    """One process's block of reservations and its queued closes, over one ledger backend."""

    def __init__(
        self, draw: DrawFn, now: Callable[[], datetime], max_block: int = MAX_BLOCK
    ) -> None:
        self._draw = draw
        self._now = now
        self._max_block = max(1, max_block)
        # One lock for the block, the takers and the queue; a refill's transaction runs under
        # it, so this process's workers never wait on SQLite's lock for each other.
        self._lock = threading.Lock()
        self._held: list[tuple[Reservation, int]] = []
        self._taken: dict[str, _Taken] = {}
        self._pending: list[Close] = []

    def take(self, label: str | None) -> Reservation:
        """One request's reservation: from the held block, else from a refill (which writes
        the queued closes first). Raises BudgetExhaustedError when nothing fits."""
        with self._lock:
            if not self._held:
                self._refill(label)
            reservation, minute = self._held.pop()
            self._taken[reservation.id] = _Taken(label, self._now(), minute)
            return reservation

    def close(self, reservation: Reservation, *, billed: bool) -> bool | None:
        """Queue the settle or release of a drawn reservation: True; False if it was closed
        already; None if it was not drawn here (the caller closes it itself)."""
        with self._lock:
            taken = self._taken.pop(reservation.id, None)
            if taken is None:
                pending = any(close.reservation.id == reservation.id for close in self._pending)
                return False if pending else None
            self._pending.append(Close(reservation, billed, taken.label, taken.made, taken.minute))
            if not self._taken:  # nothing of ours in flight: bring the files to rest
                self._write(0)
            elif not billed:  # money comes back: every process may spend it at once
                self._write(0, keep_block=True)
            return True

    def holds(self) -> bool:
        """Whether a drawn request is waiting here (so one more surely fits)."""
        return bool(self._held)

    def flush(self, *, keep_block: bool = False) -> None:
        """Write the queued closes now, and release the held block unless `keep_block`."""
        with self._lock:
            if (self._held and not keep_block) or self._pending:
                self._write(0, keep_block=keep_block)

    def steady(self, read: Callable[[], LedgerSnapshot]) -> LedgerSnapshot:
        """`read()`'s snapshot as one reservation per request would have left it: without the
        held block, with the queued closes applied."""
        with self._lock:
            snap = read()
            window = dict(snap.window)
            held = [Close(r, False, None, None, minute) for r, minute in self._held]
            for close in (*held, *self._pending):
                amount = close.reservation.amount_micro
                if close.reservation.day == snap.day.day:
                    snap.reserved_micro -= amount
                    snap.open_count -= 1
                    if close.billed:
                        snap.billed_micro += amount
                        snap.billed_count += 1
                if not close.billed and str(close.minute) in window:
                    window[str(close.minute)] = max(0, window[str(close.minute)] - amount)
            return replace(snap, window={k: v for k, v in window.items() if v})

    # -- under the lock -------------------------------------------------------------------

    def _refill(self, label: str | None) -> None:
        want = min(self._max_block, max(1, len(self._taken)))
        drawn = self._write(want, label=label)
        if not drawn.reservations:
            assert drawn.refusal is not None  # the backend refuses when nothing fits
            raise drawn.refusal
        # The first is the refilling taker's (labelled with its symbol): popped first.
        self._held = [(r, drawn.minute) for r in reversed(drawn.reservations)]

    def _queue_block(self) -> None:
        self._pending += [Close(r, False, None, None, minute) for r, minute in self._held]
        self._held = []

    def _write(self, want: int, *, keep_block: bool = False, label: str | None = None) -> Drawn:
        if want == 0 and not keep_block:
            self._queue_block()
        # On an error nothing was written: the queue stays for the next try, and the held
        # block stays open (counted as spent) in the files either way.
        drawn = self._draw(want, list(self._pending), label)
        self._pending = []
        return drawn
