"""Property tests: no input makes the symbol parser raise anything but SymbolError."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.normalizer.symbols import (
    KNOWN_SUFFIXES,
    Symbol,
    bloomberg_url,
    parse_symbol,
    to_yahoo,
)
from crawler.utils.exceptions import SymbolError, UnmappableSymbolError

FUZZ = settings(max_examples=300, deadline=None)

# What a Yahoo ticker may contain: letters, digits, its own punctuation; never whitespace.
_YAHOO_SHAPE = re.compile(r"[A-Z0-9^][A-Z0-9.&=^-]*\Z")

# Text that often parses, so the properties below run on many real Symbols, not only errors.
symbol_like = st.builds(
    lambda ticker, suffix, pad: f"{pad}{ticker}{suffix}{pad}",
    st.from_regex(r"[A-Za-z0-9&][A-Za-z0-9&./-]{0,10}", fullmatch=True),
    st.sampled_from(["", *(f":{s}" for s in sorted(KNOWN_SUFFIXES))])
    | st.sampled_from([":", ":us", ":cur", ":Com", "::IND", ":XX"]),
    st.sampled_from(["", " ", "\t", "\n "]),
)
any_text = st.text() | st.binary().map(lambda raw: raw.decode("utf-8", errors="replace"))


def _check(text: str) -> None:
    try:
        symbol = parse_symbol(text)
    except UnmappableSymbolError as exc:  # pragma: no cover - a failure, reported below
        raise AssertionError(f"parse_symbol raised UnmappableSymbolError for {text!r}") from exc
    except SymbolError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        assert len(str(exc)) < 300
        return
    assert isinstance(symbol, Symbol)
    assert parse_symbol(symbol.canonical) == symbol
    assert parse_symbol(symbol.canonical.lower()) == symbol
    assert bloomberg_url(symbol).endswith("/quote/" + symbol.canonical)
    try:
        yahoo = to_yahoo(symbol)
    except UnmappableSymbolError as exc:
        assert str(exc).startswith(f"no Yahoo equivalent for {symbol.canonical} ")
        return
    assert isinstance(yahoo, str)
    assert _YAHOO_SHAPE.match(yahoo), yahoo


@FUZZ
@given(any_text)
def test_arbitrary_text_parses_or_raises_symbol_error(text: str) -> None:
    _check(text)


@FUZZ
@given(symbol_like)
def test_symbol_like_text_round_trips(text: str) -> None:
    _check(text)


@FUZZ
@given(any_text, any_text)
def test_text_around_a_valid_symbol(prefix: str, suffix: str) -> None:
    _check(f"{prefix}AAPL:US{suffix}")
