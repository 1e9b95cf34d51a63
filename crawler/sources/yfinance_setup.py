"""yfinance's process-wide state, set once, and one Yahoo answer read within a cap.

    yf = load_yfinance(cache_dir)    # imported on first use; its cache location set once
    quiet_yfinance_warnings()        # its own deprecation warnings are its business
    forget_cookie_and_crumb(yf, data)    # its cookie and crumb, in memory and on disk
    sink = CappedBody(limit)         # curl's write callback: aborts past `limit` bytes

yfinance keeps one session and crumb (its `YfData` singleton), its cache location and its
config per process: the first `YFinanceSource` to fetch decides the cache directory. Importing
this module imports neither yfinance nor curl_cffi.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from crawler.sources.yahoo_errors import one_line
from crawler.utils.exceptions import StorageError
from crawler.utils.heavy_imports import import_pandas

__all__ = [
    "CappedBody",
    "file_too_large",
    "forget_cookie_and_crumb",
    "forget_kept_cookies",
    "load_yfinance",
    "quiet_yfinance_warnings",
]

# pandas deprecation/future warnings attributed to yfinance's code are its business, not ours;
# anything else still surfaces.
_YFINANCE_MODULES = r"yfinance(\.|$)"

_setup_lock = threading.Lock()
_yfinance_cache_dir: str | None = None


def file_too_large(exc: Exception) -> bool:
    """curl's CURLE_FILESIZE_EXCEEDED (63): the session's backstop stopped the answer."""
    return getattr(exc, "code", None) == _CURLE_FILESIZE_EXCEEDED or "curl: (63)" in str(exc)


_CURLE_FILESIZE_EXCEEDED = 63


class CappedBody:
    """curl's write callback for one answer: keeps the body until `limit` bytes, then asks
    curl to abort the transfer (so a 60 MB answer costs `limit` bytes of memory, not 60 MB)."""

    _ABORT = 0xFFFFFFFF  # CURL_WRITEFUNC_ERROR: the transfer stops with a write error

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.over = False
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > self.limit:
            self.over = True
            self._chunks.clear()
            return self._ABORT
        self._chunks.append(chunk)
        return len(chunk)

    def body(self) -> bytes:
        return b"".join(self._chunks)


def load_yfinance(cache_dir: Path) -> ModuleType:
    """Import yfinance on first use and configure its process-wide state once."""
    global _yfinance_cache_dir
    import_pandas()  # before yfinance: pandas without pyarrow
    import yfinance
    import yfinance.cache
    import yfinance.data

    module: ModuleType = yfinance
    with _setup_lock:
        if _yfinance_cache_dir is None:
            # Process-global, and effectively fixed once yfinance has opened its databases.
            yfinance.cache.set_cache_location(str(cache_dir))
            _yfinance_cache_dir = str(cache_dir)
        # Raise instead of logging, so failures can be mapped.
        yfinance.config.debug.hide_exceptions = False
    return module


def forget_cookie_and_crumb(yf: ModuleType, data: Any) -> None:
    """Make yfinance's `YfData` singleton (`data`) forget its cookie and crumb, and the cookies
    kept on disk, under its own lock: the next request does the cookie-and-crumb dance again.
    A yfinance without that lock is left as it is."""
    lock = getattr(data, "_cookie_lock", None)
    if lock is None:
        return
    with lock:
        data._cookie = None
        data._crumb = None
        forget_kept_cookies(yf)


def forget_kept_cookies(yf: ModuleType) -> None:
    """Delete the cookies yfinance keeps in its cache directory, for every strategy."""
    try:
        kept = yf.cache.get_cookie_cache()
        for strategy in ("basic", "csrf", "curlCffi"):
            kept.store(strategy, None)
    except Exception as exc:  # its cache is a convenience: a failure here costs a retry
        message = f"yfinance's cookie cache could not be cleared: {one_line(exc)}"
        raise StorageError(message) from exc


def quiet_yfinance_warnings() -> None:
    """Ignore deprecation/future warnings raised from yfinance's own modules.

    Re-applied on every fetch because callers (pytest, `warnings.catch_warnings`) may reset
    the filter list; `filterwarnings` moves an existing identical entry to the front.
    """
    with _setup_lock:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=_YFINANCE_MODULES)
