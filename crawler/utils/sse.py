"""Reading Server-Sent Events: the JSON objects of a `GET /v1/events` body, as bytes arrive.

The one reader for `crawler watch`, the CLI's progress bar and the dashboard's hub (three used
to drift: one wanted "data: " with its space, the others "data:"). As the SSE spec says, one
space after the colon is optional; comment lines (": keep-alive"), `retry:`, `event:` and `id:`
are skipped. The daemon writes one JSON object per `data:` line, so each line is one event (the
spec's multi-line data, joined by "\\n", is not used on the control socket).

    >>> list(iter_sse([b'data: {"type": "quote"}\\n', b'data:{"type": "budget"}\\n\\n: hi\\n']))
    [{'type': 'quote'}, {'type': 'budget'}]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["iter_sse"]


def iter_sse(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of the `data:` lines of a Server-Sent Events body, in order.

    `chunks` may split lines anywhere; a line that is not JSON, or JSON that is not an object,
    is skipped (the stream goes on)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            try:
                event = json.loads(line[5:].strip())
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
