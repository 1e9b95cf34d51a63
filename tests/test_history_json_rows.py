"""The history's JSONL export builds each line from the stored row, without a Quote, while the
row's keys are the Quote model's fields in order; a model change turns that fast path off (and
this test says so) rather than letting the export drift from `Quote.to_json_dict()`."""

from __future__ import annotations

from dataclasses import fields

from crawler.normalizer.schemas import Quote
from crawler.store.history import rows as history


def test_the_fast_row_to_json_path_is_in_use() -> None:
    assert history._row_json is history._json_dict


def test_the_fast_path_keys_are_the_quote_models_fields_in_order() -> None:
    keys = tuple(history._json_dict(history._SAMPLE_ROW))
    assert keys == tuple(f.name for f in fields(Quote))
    assert set(keys) == set(history.CSV_COLUMNS)
