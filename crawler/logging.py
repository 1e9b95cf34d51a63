"""Logging for the daemon and the CLI: structlog loggers with key-value events, one format.

    log = get_logger("crawler.hybrid")                 # every crawler module, at import
    log.warning("serving stale quote", symbol="AAPL:US", reasons="bright_data: 503")
    configure_logging("auto", "info", secrets=[api_key])   # once, by the daemon or the CLI

Every module logs through a structlog logger: an event (a short fixed phrase) and its data as
keys, never values formatted into the text, so JSON lines can be filtered by key
(`jq 'select(.symbol == "AAPL:US")'`). structlog hands each event to stdlib logging as a plain
record (the event as the message, the keys as record attributes), so pytest's caplog, third-party
records and ours all pass through the one formatter `configure_logging` installs, which puts
the keys back into the line (ExtraAdder).

`auto` renders for humans on a terminal and JSON lines otherwise (a log file, journald). Every
line passes a redaction step twice: once on the event dict (before JSON escaping could hide a
secret) and once on the rendered text (tracebacks, foreign records); each secret's value becomes
"****". The Bright Data API key must never reach a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "SecretRedactor",
    "configure_logging",
    "get_logger",
    "resolve_log_format",
    "set_log_level",
]

#: What a secret's value is replaced with.
REDACTED = "****"
# Secrets shorter than this are not redacted: replacing "a" everywhere would garble every line.
_MIN_SECRET_CHARS = 4


class SecretRedactor:
    """A structlog processor replacing each secret's value with "****", in the event dict
    (nested dicts, lists, strings) or in an already rendered line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True
        )

    def redact_text(self, text: str) -> str:
        """`text` with every secret replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self._redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._redact(item) for item in value)
        if isinstance(value, BaseException | bytes) or value is None:
            return value
        if isinstance(value, int | float | bool):
            return value
        # Anything else will be str()-ed by the renderer: do it now so it can be scrubbed.
        return self.redact_text(str(value))

    def __call__(self, logger: WrappedLogger, method_name: str, event: Any) -> Any:
        if not self.secrets:
            return event
        if isinstance(event, str):  # after the renderer: the final line
            return self.redact_text(event)
        if isinstance(event, bytes):
            return self.redact_text(event.decode("utf-8", "replace")).encode("utf-8")
        if isinstance(event, MutableMapping):
            for key in list(event):
                if key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
                    continue
                event[key] = self._redact(event[key])
        return event


def resolve_log_format(log_format: str, stream: TextIO) -> str:
    """The format to render: `auto` is "console" on a terminal, "json" otherwise."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    if log_format not in ("console", "json"):
        raise ValueError(f"unknown log format {log_format!r}; use auto, console or json")
    return log_format


def _add_logger_name(logger: WrappedLogger, method_name: str, event: EventDict) -> EventDict:
    # structlog's add_logger_name needs a stdlib logger or a record; ours may be either.
    record = event.get("_record")
    if record is not None:
        event.setdefault("logger", record.name)
    elif hasattr(logger, "name"):
        event.setdefault("logger", logger.name)
    return event


# structlog's loggers hand their events to stdlib logging from the first import on (before
# configure_logging too, as in tests): the event becomes the record's message, the keys its
# attributes. Keys must not be LogRecord attribute names (name, message, module, process...).
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.stdlib.render_to_log_kwargs,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The structlog logger of a crawler module ("crawler.hybrid", ...)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def set_log_level(level: str) -> None:
    """The root level (debug, info, ...; a reload changes it live); third-party chatter
    (APScheduler's "Running job ...", urllib3) stays at warning unless debugging."""
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.getLogger().setLevel(numeric_level)
    quiet = logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING
    for name in ("apscheduler", "urllib3", "yfinance", "peewee", "curl_cffi"):
        logging.getLogger(name).setLevel(quiet)


def configure_logging(
    log_format: str = "auto",
    level: str = "info",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to `stream` (stderr) in one format, with redaction.

    Safe to call again (the CLI reconfigures after reading the settings); the previous handler
    installed by this function is replaced.
    """
    out = stream if stream is not None else sys.stderr
    rendered_as = resolve_log_format(log_format, out)
    redactor = SecretRedactor(secrets)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        # The keys of our events (and any `extra=` of a third-party record) back into the line.
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor
    if rendered_as == "json":
        # Tracebacks become a string field, so they can be redacted and stay one JSON line.
        final: list[Processor] = [
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=getattr(out, "isatty", lambda: False)(),
            exception_formatter=structlog.dev.plain_traceback,
        )
        final = [redactor, renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
            redactor,  # again, on the rendered line: tracebacks and anything a renderer added
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("crawler")

    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "crawler":
            root.removeHandler(existing)
    root.addHandler(handler)
    set_log_level(level)
