"""The bridge's log: JSON lines on stderr, one per event, as the core's (structlog), so that one
collector reads both. The bridge logs through the standard library's ``logging``; structlog's
formatter renders each record: ``{"event": ..., "logger": ..., "level": ..., "timestamp": ...}``
with the traceback as ``exception`` when there is one."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_json_logging(level: int = logging.INFO) -> None:
    """Every record of the process's loggers as one JSON line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
