"""Ids the core derives from who asked and with which request id, so a client knows them before
it calls (and a replay names the same thing)."""

from __future__ import annotations

import base64
import hashlib


def _derive(kind: str, prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\n".join((kind, *parts)).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:26].lower()


def payment_id_for(caller: str, request_id: str) -> str:
    """The id LockPayment gives the payment ``caller`` (``platform/<id>``) locks with
    ``request_id``: known before the call, so title holders can pledge titles to it."""
    return _derive("payment", "p_", caller, request_id)
