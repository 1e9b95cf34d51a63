"""pandas without pyarrow: the daemon's largest avoidable import.

    pandas = import_pandas()        # where pandas (or yfinance, exchange_calendars) is first needed
    pyarrow = import_pyarrow()      # the Parquet export: pyarrow in full, ImportError if absent

pandas imports pyarrow at its own import whenever pyarrow is installed (the `crawler[parquet]`
extra), only to learn its version: 44 MB more of a daemon that uses no Arrow-backed pandas type
(VmHWM at 1,000 symbols 201 MB instead of ~150). So the first import of pandas is made with
pyarrow hidden, and pandas takes it as absent. The Parquet export imports pyarrow itself, in
full, when asked; both imports take one lock so the export never sees pyarrow hidden.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

__all__ = ["import_pandas", "import_pyarrow"]

_lock = threading.Lock()


def import_pandas() -> ModuleType:
    """pandas, first imported with pyarrow hidden (pandas then never loads it)."""
    module = sys.modules.get("pandas")
    if module is not None:
        return module
    with _lock:
        if "pyarrow" in sys.modules:  # already loaded in full: nothing left to save
            return importlib.import_module("pandas")
        sys.modules["pyarrow"] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            return importlib.import_module("pandas")
        finally:
            if "pyarrow" in sys.modules and sys.modules["pyarrow"] is None:
                del sys.modules["pyarrow"]


def import_pyarrow() -> ModuleType:
    """pyarrow with pyarrow.parquet; ImportError when the extra is not installed."""
    with _lock:
        importlib.import_module("pyarrow.parquet")
        return importlib.import_module("pyarrow")
