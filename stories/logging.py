"""structlog configuration: JSON lines on stdout, request/actor context from contextvars."""

from __future__ import annotations

import logging
import sys
from typing import BinaryIO

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", *, stream: BinaryIO | None = None) -> None:
    """Configure once at start (the CLI does). Safe to call again, e.g. from tests.

    Lines go to stdout unless `stream` is given (tests read them back from a buffer).
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    # Libraries speak from warning up (their info lines are chatter about connections), or everything at debug.
    root.setLevel(logging.DEBUG if level == "debug" else max(logging.WARNING, _LEVELS[level]))
    if not any(isinstance(handler, _ToStructlog) for handler in root.handlers):
        root.addHandler(_ToStructlog())


class _ToStructlog(logging.Handler):
    """Libraries that log through the standard library (asyncpg: "failed to restore the pool connection floor"
    during a database outage, with a whole traceback) become one JSON line like ours, the error as its repr."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        structlog.get_logger().log(
            record.levelno,
            "library.log",
            logger=record.name,
            message=record.getMessage(),
            error=None if error is None else repr(error),
        )
