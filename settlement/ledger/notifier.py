"""Wakes the WatchPayment and WatchLoan streams of this process when a batch that changed their
payment or loan commits (payment and loan ids never collide: ``p_`` and ``l_``). Streams also
poll, for changes committed by other replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class PaymentNotifier:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def changed(self, payment_id: str) -> asyncio.Event:
        """An event set at the next commit that changes ``payment_id``. Take it *before* reading
        the payment, so that a commit in between is not missed."""
        event = self._events.get(payment_id)
        if event is None or event.is_set():
            event = self._events[payment_id] = asyncio.Event()
        return event

    def notify(self, payment_ids: Iterable[str]) -> None:
        for payment_id in payment_ids:
            event = self._events.pop(payment_id, None)
            if event is not None:
                event.set()
