"""Which market a symbol trades on, and weekly rules for the markets without an exchange calendar.

Pure tables and date arithmetic; nothing here imports pandas or exchange_calendars.

    >>> market_of("VOD:LN", AssetClass.STOCKS), market_of("SPX:IND", AssetClass.INDICES)
    ('XLON', 'XNYS')
    >>> market_of("EURUSD:CUR", AssetClass.FOREX), market_of("XBTUSD:CUR", AssetClass.FOREX)
    ('FX', 'CRYPTO')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from crawler.normalizer.exchanges import EXCHANGES, asset_class_of_suffix
from crawler.normalizer.schemas import AssetClass
from crawler.normalizer.symbols import infer_asset_class

__all__ = [
    "BONDS",
    "CME",
    "CME_CALENDAR",
    "CRYPTO",
    "FX",
    "INDEX_MARKETS",
    "SUFFIX_MARKETS",
    "UNKNOWN",
    "WEEKLY_RULES",
    "WeeklyRule",
    "market_of",
]

FX = "FX"
CRYPTO = "CRYPTO"
CME = "CME"
BONDS = "BONDS"
UNKNOWN = "UNKNOWN"
#: The exchange_calendars name used for CME Globex holidays and early closes.
CME_CALENDAR = "CMES"

# Bloomberg exchange suffix -> exchange_calendars code, from the one exchange table
# (crawler.normalizer.exchanges). Venues of one country share the home exchange's hours.
SUFFIX_MARKETS: dict[str, str] = {
    code: exchange.calendar for code, exchange in EXCHANGES.items() if exchange.calendar
}

# Index ticker -> the market whose session the index is computed in.
INDEX_MARKETS: dict[str, str] = {
    **dict.fromkeys(("SPX", "INDU", "CCMP", "NDX", "RTY", "VIX", "NYA", "SOX", "TRAN"), "XNYS"),
    **dict.fromkeys(("UKX", "MCX", "ASX"), "XLON"),
    **dict.fromkeys(("NKY", "TPX"), "XTKS"),
    **dict.fromkeys(("DAX", "MDAX", "SX5E", "SXXP"), "XETR"),
    "CAC": "XPAR",
    "AEX": "XAMS",
    **dict.fromkeys(("HSI", "HSCEI"), "XHKG"),
    **dict.fromkeys(("AS51", "AS30"), "XASX"),
    "SPTSX": "XTSE",
    "SMI": "XSWX",
    "FTSEMIB": "XMIL",
    "IBEX": "XMAD",
    "KOSPI": "XKRX",
    "TWSE": "XTAI",
    **dict.fromkeys(("SENSEX", "NIFTY"), "XBOM"),
    "IBOV": "BVMF",
    **dict.fromkeys(("SHCOMP", "SHSZ300", "SZCOMP"), "XSHG"),
    "STI": "XSES",
    "OMX": "XSTO",
}


def market_of(symbol: str, asset_class: AssetClass | None) -> str:
    """The market code of a canonical "TICKER:SUFFIX" symbol; "UNKNOWN" when we cannot tell."""
    ticker, _, suffix = symbol.strip().upper().rpartition(":")
    if not ticker:  # no ":" at all: the whole text is the ticker
        ticker, suffix = suffix, ""
    if asset_class is None:
        asset_class = asset_class_of_suffix(suffix)
        if asset_class is None:
            asset_class = AssetClass.INDICES if ticker in INDEX_MARKETS else AssetClass.STOCKS
    if asset_class is AssetClass.CRYPTO:
        return CRYPTO
    if asset_class is AssetClass.FOREX:
        # The same rule parse_symbol classes a pair by: BNBUSD is crypto in both.
        return CRYPTO if infer_asset_class("CUR", ticker) is AssetClass.CRYPTO else FX
    if asset_class is AssetClass.COMMODITIES:
        return CME
    if asset_class is AssetClass.BONDS:
        return BONDS
    if asset_class is AssetClass.INDICES and ticker in INDEX_MARKETS:
        return INDEX_MARKETS[ticker]
    return SUFFIX_MARKETS.get(suffix) or INDEX_MARKETS.get(ticker) or UNKNOWN


@dataclass(frozen=True)
class WeeklyRule:
    """A market that opens and closes at fixed local times each week (no holidays).

    `opens` and `closes` are (weekday, local time) pairs, Monday = 0. Trading is the half-open
    span from an open to the next close.
    """

    zone: str
    opens: tuple[tuple[int, time], ...]
    closes: tuple[tuple[int, time], ...]

    def intervals_around(self, at: datetime) -> list[tuple[datetime, datetime]]:
        """UTC (open, close) pairs from about a week before `at` to two weeks after.

        Wide enough that the interval holding `at`, the next open and that open's close are
        all inside, whichever weekday `at` falls on.
        """
        tz = ZoneInfo(self.zone)
        local_day = at.astimezone(tz).date()
        events: list[tuple[datetime, bool]] = []
        for offset_days in range(-8, 16):
            day = local_day + timedelta(days=offset_days)
            weekday = day.weekday()
            for rule_weekday, local in self.opens:
                if rule_weekday == weekday:
                    events.append((datetime.combine(day, local, tz).astimezone(UTC), True))
            for rule_weekday, local in self.closes:
                if rule_weekday == weekday:
                    events.append((datetime.combine(day, local, tz).astimezone(UTC), False))
        events.sort()
        intervals: list[tuple[datetime, datetime]] = []
        start: datetime | None = None
        for when, is_open in events:
            if is_open and start is None:
                start = when
            elif not is_open and start is not None:
                intervals.append((start, when))
                start = None
        return intervals


_MON, _TUE, _WED, _THU, _FRI, _SUN = 0, 1, 2, 3, 4, 6

#: The markets run by a weekly rule. CME's rule is the fallback when the CMES calendar is absent.
WEEKLY_RULES: dict[str, WeeklyRule] = {
    # Spot FX: Sunday 17:00 to Friday 17:00 New York, continuously.
    FX: WeeklyRule("America/New_York", ((_SUN, time(17)),), ((_FRI, time(17)),)),
    # US Treasuries (BrokerTec/eSpeed): Sunday 18:00 to Friday 17:00 New York.
    BONDS: WeeklyRule("America/New_York", ((_SUN, time(18)),), ((_FRI, time(17)),)),
    # CME Globex: Sunday 18:00 to Friday 17:00 New York, halted 17:00-18:00 every evening.
    CME: WeeklyRule(
        "America/New_York",
        tuple((day, time(18)) for day in (_SUN, _MON, _TUE, _WED, _THU)),
        tuple((day, time(17)) for day in (_MON, _TUE, _WED, _THU, _FRI)),
    ),
}
