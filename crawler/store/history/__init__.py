"""The quote history in the node's own SQLite file: `store.py` (`HistoryStore`: writes,
reads, exports) over `rows.py` (the schema, a stored row to and from a Quote, CSV, JSON and
Parquet; the time filter and `parse_time_spec`) and `export.py` (rows streamed to a file)."""

from crawler.store.history.rows import (
    CSV_COLUMNS,
    HISTORY_FILENAME,
    KINDS,
    Kind,
    TimeBy,
    parse_time_spec,
)
from crawler.store.history.store import HistoryStore

__all__ = [
    "CSV_COLUMNS",
    "HISTORY_FILENAME",
    "KINDS",
    "HistoryStore",
    "Kind",
    "TimeBy",
    "parse_time_spec",
]
