"""The one Server-Sent Events reader (crawler.utils.sse) and the places that use it."""

from __future__ import annotations

from crawler.cli.progress import sse_events
from crawler.cli.watch import iter_sse as watch_sse
from crawler.dashboard.hub import iter_sse as hub_sse
from crawler.utils.sse import iter_sse


def test_the_space_after_data_colon_is_optional() -> None:
    chunks = [b'data: {"type": "quote"}\n\ndata:{"type": "budget"}\n\n']
    assert list(iter_sse(chunks)) == [{"type": "quote"}, {"type": "budget"}]


def test_comments_fields_bad_json_and_non_objects_are_skipped() -> None:
    chunks = [
        b": keep-alive\nretry: 2000\nevent: x\nid: 7\n",
        b"data: not json\ndata: [1, 2]\ndata: 3\n",
        b'data: {"ok": true}\r\n',
    ]
    assert list(iter_sse(chunks)) == [{"ok": True}]


def test_a_line_split_across_chunks_is_joined_and_a_partial_last_line_waits() -> None:
    chunks = [b"da", b'ta: {"a"', b": 1}\n", b'data: {"b": 2}']
    assert list(iter_sse(chunks)) == [{"a": 1}]


def test_the_cli_and_the_dashboard_read_alike() -> None:
    body = [b'data:{"type": "progress", "done": 1}\n\ndata: {"type": "quote", "symbol": "A"}\n']
    expected = list(iter_sse(body))
    assert list(sse_events(body)) == expected  # used to need "data: " with its space
    assert list(watch_sse(body)) == expected
    assert list(hub_sse(body)) == expected
