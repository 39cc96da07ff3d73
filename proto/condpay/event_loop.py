"""The event loop a condpay process runs on (the core's ``condpay serve``, the bridge's ``bridge
serve``, any client program that wants it): uvloop (libuv) when installed, which measured ~10%
faster for the core and ~8% less CPU per settlement for the bridge; ``CONDPAY_EVENT_LOOP=asyncio``
keeps the standard loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop (as :func:`asyncio.run` does)."""
    # Unset or empty is the default, as for every condpay setting (settlement/config.py).
    if (os.environ.get("CONDPAY_EVENT_LOOP") or "uvloop").strip().lower() == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
