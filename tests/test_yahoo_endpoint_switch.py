"""Issue 22 item 10: after YFINANCE_ENDPOINT changes, the cookie yfinance kept on disk from the
old endpoint must not make every batch fail (it did, "Yahoo refused the crumb twice ... HTTP
401", until data/yfinance was deleted by hand). The fake hands out crumbs only for its own
cookie, as Yahoo does. Each run is a fresh process: yfinance keeps one session per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fakemarket import FakeMarket

_ONE_RUN = """
import json, sys
from pathlib import Path
from crawler.normalizer.symbols import parse_symbol
from crawler.sources.yfinance_source import YFinanceSource
source = YFinanceSource(endpoint=sys.argv[1], cache_dir=Path(sys.argv[2]), timeout_s=5)
try:
    answer = source.fetch_batch([parse_symbol("AAPL:US"), parse_symbol("VOD:LN")])
    print(json.dumps({"quotes": sorted(answer.quotes)}))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
finally:
    source.close()
"""


def _batch_in_a_new_process(endpoint: str, cache_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, endpoint, str(cache_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_new_endpoint_gets_its_own_cookie_and_crumb(tmp_path: Path) -> None:
    cache_dir = tmp_path / "yfinance"
    with FakeMarket() as first, FakeMarket() as second:
        assert _batch_in_a_new_process(first.yahoo.url, cache_dir) == {
            "quotes": ["AAPL:US", "VOD:LN"]
        }
        # The same data dir pointed at another endpoint: the kept cookie is the first one's.
        assert _batch_in_a_new_process(second.yahoo.url, cache_dir) == {
            "quotes": ["AAPL:US", "VOD:LN"]
        }
        assert second.yahoo.count("cookie") == 1  # its own cookie, not the one kept on disk
        # And back again: still served.
        assert _batch_in_a_new_process(first.yahoo.url, cache_dir) == {
            "quotes": ["AAPL:US", "VOD:LN"]
        }
