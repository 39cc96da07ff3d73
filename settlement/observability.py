"""structlog: JSON lines on stderr, one per event, with ISO timestamps."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import orjson
import structlog

EventListener = Callable[[MutableMapping[str, Any]], None]
_LISTENERS: list[EventListener] = []

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            tap,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )


def tap(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that shows every event to the listeners of :func:`listen` (tests
    assert on the server's log with it); it changes nothing."""
    for listener in _LISTENERS:
        listener(event_dict)
    return event_dict


@contextlib.contextmanager
def listen(listener: EventListener) -> Iterator[None]:
    """Call ``listener`` with every structlog event logged while inside; puts :func:`tap` first
    in the configured processors if it is not there yet."""
    processors = list(structlog.get_config()["processors"])
    if tap not in processors:
        structlog.configure(processors=[tap, *processors])
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)
