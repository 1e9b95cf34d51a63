"""The daily Bright Data budget: its terms once, two backends below them.

    terms.py     units, `Reservation`, the rule (`fits`), the day rule, the real-time window,
                 the refusal (`exhausted_error`), and `LedgerTerms`: `statistics()`, `day()`,
                 `can_reserve()`, `settle()`/`release()` and the limits written once
    embedded.py  `BudgetLedger`: the data dir's diskcache (one node, threads and processes)
    draw.py      `ReservationDraw`: while paid requests overlap, the embedded ledger reserves a
                 block in one transaction and writes settles with the next (at rest, the
                 files are exactly what one reservation per request would have written)
    redis.py     `RedisLedger`: a cluster's budget, the atomic part in Lua
    epoch.py     the Redis ledger's recovery after Redis lost its data (`SpendRecord`, the
                 epoch scripts): fail closed, re-seed from every node's own record

Every paid request is bracketed: `reserve()` before it (refused with BudgetExhaustedError when
it would not fit), then `settle()` if the source billed us or `release()` if it did not.
`crawler.store.backend.open_stores` picks the backend.
"""

from crawler.store.ledger.embedded import BudgetLedger
from crawler.store.ledger.terms import (
    DAYS_KEPT,
    WINDOW_S,
    Reservation,
    budget_terms,
    current_boot_id,
    exhausted_error,
    fits,
    micro_from_usd,
    usd_from_micro,
)

__all__ = [
    "DAYS_KEPT",
    "WINDOW_S",
    "BudgetLedger",
    "Reservation",
    "budget_terms",
    "current_boot_id",
    "exhausted_error",
    "fits",
    "micro_from_usd",
    "usd_from_micro",
]
