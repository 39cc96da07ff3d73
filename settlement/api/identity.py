"""Who is calling: a role and an id, from the transport, never from the request body.

In this release the identity comes from the ``condpay-caller`` metadata (``<role>/<id>``), which
the server trusts only in its explicit plaintext development mode (``--insecure``).
"""

from __future__ import annotations

import contextvars
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from settlement.errors import Reason, SettlementError

CALLER_METADATA_KEY: Final = "condpay-caller"
_CALLER_ID: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class Role(enum.StrEnum):
    CENTRAL_BANK = "central_bank"
    INSTITUTION = "institution"  # an operating institution: holds reserves, opens wallets
    PLATFORM = "platform"
    FINANCIER = "financier"
    ORACLE = "oracle"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    id: str

    def __str__(self) -> str:
        return f"{self.role.value}/{self.id}"


def parse_caller(text: str) -> Caller:
    role, sep, ident = text.partition("/")
    if not sep or role not in Role.__members__.values() or not _CALLER_ID.fullmatch(ident):
        raise SettlementError(
            Reason.CALLER_UNKNOWN,
            f"{CALLER_METADATA_KEY} must be <role>/<id> with a role among "
            f"{', '.join(r.value for r in Role)}",
        )
    return Caller(Role(role), ident)


_known: dict[str, Caller] = {}


def caller_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> Caller:
    for key, value in metadata or ():
        if key == CALLER_METADATA_KEY and isinstance(value, str):
            caller = _known.get(value)
            if caller is None:
                caller = parse_caller(value)
                if len(_known) < 10_000:  # identities seen are few; parsing each call is not free
                    _known[value] = caller
            return caller
    raise SettlementError(Reason.CALLER_UNKNOWN, f"no {CALLER_METADATA_KEY} metadata on the call")


_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("condpay_caller")


def set_current_caller(caller: Caller) -> contextvars.Token[Caller]:
    return _current.set(caller)


def current_caller() -> Caller:
    """The authenticated caller of the call being handled (set by the call wrapper)."""
    return _current.get()
