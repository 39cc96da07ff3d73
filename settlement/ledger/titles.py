"""Digital titles as ledger commands: issue, split, pledge, release a pledge, and the title moves
of deliveries (DvP, a contract's ``deliver title``).

A title (an electronic bill of lading, a warehouse receipt, a receivable certificate) is issued
once per (issuer, document): its id derives from both, so a second issuance of the same document
meets the first under its row lock. It has one holder; a split retires it into two children
(``<id>.1`` with the first units, ``<id>.2`` with the rest); a pledged title cannot move, split or
be pledged again. Every change is a numbered title move in the same transaction as the rest.

Signatures are verified here, inside the batch, against the key that holds now: an issuer's key
from the oracle registry (issuers are registered Ed25519 oracles: a carrier, a bonded warehouse),
a holder's or pledgee's from the wallet the API layer already verified it against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from condpay.ids import title_id_for

from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger.commands import Command, check_not_expired
from settlement.ledger.records import Reads, TitleMoveRecord, TitleRecord, TitleState
from settlement.ledger.working_set import WorkingSet
from wallets import BadSignature, verify
from wallets.canonical import ID_PATTERN

ED25519: Final = "ED25519"


def derive_title_id(issuer_id: str, document_sha256: str) -> str:
    return title_id_for(issuer_id, document_sha256)


def child_ids(title_id: str) -> tuple[str, str]:
    return f"{title_id}.1", f"{title_id}.2"


def active_title(ws: WorkingSet, title_id: str) -> TitleRecord:
    title = ws.title(title_id)
    if title is None:
        raise not_found(Reason.TITLE_NOT_FOUND, "title", title_id)
    if title.state is not TitleState.ACTIVE:
        raise SettlementError(
            Reason.TITLE_RETIRED,
            f"title {title_id} was split; its units live on in {', '.join(child_ids(title_id))}",
            metadata={"title_id": title_id},
        )
    return title


def check_holder(title: TitleRecord, wallet_id: str) -> None:
    if title.holder_wallet_id != wallet_id:
        raise SettlementError(
            Reason.NOT_TITLE_HOLDER,
            f"wallet {wallet_id} does not hold title {title.title_id}",
            metadata={"title_id": title.title_id, "wallet_id": wallet_id},
        )


def check_free(title: TitleRecord) -> None:
    if title.pledged_to:
        raise SettlementError(
            Reason.TITLE_PLEDGED,
            f"title {title.title_id} is pledged to {title.pledged_to}",
            metadata={"title_id": title.title_id, "pledged_to": title.pledged_to},
        )


def move(
    ws: WorkingSet,
    title: TitleRecord,
    kind: str,
    to_wallet_id: str,
    request_id: str,
    *,
    pledged_to: str | None = None,
) -> None:
    """Record one change of ``title`` (already checked): its holder becomes ``to_wallet_id``."""
    ws.touch(title)
    title.moves.append(
        TitleMoveRecord(
            kind,
            title.holder_wallet_id,
            to_wallet_id,
            title.units,
            request_id,
            ws.now_us,
            ws.caller,
        )
    )
    title.holder_wallet_id = to_wallet_id
    if pledged_to is not None:
        title.pledged_to = pledged_to
    title.version += 1
    title.updated_at_us = ws.now_us


def split(
    ws: WorkingSet, title: TitleRecord, units_first: int, request_id: str
) -> tuple[TitleRecord, TitleRecord]:
    """Retire ``title`` (free, checked) into two children; the first has ``units_first``."""
    if not 0 < units_first < title.units:
        raise SettlementError(
            Reason.TITLE_UNITS_EXCEEDED,
            f"title {title.title_id} has {title.units} units; a split keeps 1..{title.units - 1} "
            "in the first part",
            metadata={"title_id": title.title_id, "units": str(title.units)},
        )
    first_id, rest_id = child_ids(title.title_id)
    if not ID_PATTERN.fullmatch(rest_id):
        raise SettlementError(
            Reason.INVALID_UNITS,
            f"title {title.title_id} has been split as often as an id allows",
            metadata={"title_id": title.title_id},
        )
    children = []
    for child_id, units in ((first_id, units_first), (rest_id, title.units - units_first)):
        child = TitleRecord(
            title_id=child_id,
            kind=title.kind,
            issuer_id=title.issuer_id,
            holder_wallet_id=title.holder_wallet_id,
            units=units,
            description=title.description,
            document_sha256=title.document_sha256,
            pledged_to="",
            parent_title_id=title.title_id,
            state=TitleState.ACTIVE,
            version=1,
            issued_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            moves=[
                TitleMoveRecord(
                    "SPLIT", "", title.holder_wallet_id, units, request_id, ws.now_us, ws.caller
                )
            ],
            is_new=True,
        )
        ws.add(child)
        children.append(child)
    move(ws, title, "SPLIT", title.holder_wallet_id, request_id)
    title.state = TitleState.SPLIT
    return children[0], children[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueTitle(Command):
    """A signed ``condpay.title.v2`` from a registered issuer (an Ed25519 oracle)."""

    title_id: str
    issuer_id: str
    kind: str
    holder: str
    units: int
    description: str
    document_sha256: str
    expires_at_us: int
    payload: bytes
    signature: bytes

    def reads(self) -> Reads:
        return Reads(
            title_ids={self.title_id},
            wallet_ids={self.holder},
            oracle_ids={self.issuer_id},
            registry="read",
        )

    def apply(self, ws: WorkingSet) -> TitleRecord:
        issuer = ws.world.oracles.get(self.issuer_id)
        if issuer is None:
            raise not_found(Reason.ORACLE_NOT_FOUND, "issuer", self.issuer_id)
        if issuer.revoked:
            raise SettlementError(
                Reason.ORACLE_REVOKED,
                f"issuer {self.issuer_id!r} is revoked",
                metadata={"id": self.issuer_id},
            )
        if issuer.scheme != ED25519:
            raise SettlementError(
                Reason.SIGNATURE_INVALID,
                f"issuer {self.issuer_id!r} signs with {issuer.scheme}; titles need Ed25519",
                metadata={"issuer": self.issuer_id},
            )
        try:
            verify(issuer.public_key, self.signature, self.payload)
        except BadSignature:
            raise SettlementError(
                Reason.SIGNATURE_INVALID,
                f"the signature does not verify with issuer {self.issuer_id!r}'s current key",
                metadata={"issuer": self.issuer_id},
            ) from None
        check_not_expired(ws, self.expires_at_us)
        if ws.wallet(self.holder) is None:
            raise not_found(Reason.WALLET_NOT_FOUND, "wallet", self.holder)
        if ws.title(self.title_id) is not None:
            raise SettlementError(
                Reason.TITLE_EXISTS,
                f"issuer {self.issuer_id!r} already issued a title for this document: "
                f"{self.title_id}",
                metadata={"title_id": self.title_id},
            )
        title = TitleRecord(
            title_id=self.title_id,
            kind=self.kind,
            issuer_id=self.issuer_id,
            holder_wallet_id=self.holder,
            units=self.units,
            description=self.description,
            document_sha256=self.document_sha256,
            pledged_to="",
            parent_title_id="",
            state=TitleState.ACTIVE,
            version=1,
            issued_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            moves=[
                TitleMoveRecord(
                    "ISSUED", "", self.holder, self.units, self.request_id, ws.now_us, self.caller
                )
            ],
            is_new=True,
        )
        ws.add(title)
        return title


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitTitle(Command):
    """The holder (signature checked by the API layer) splits a free title in two."""

    title_id: str
    holder: str
    units_first: int
    expires_at_us: int

    def reads(self) -> Reads:
        return Reads(title_ids={self.title_id, *child_ids(self.title_id)})

    def apply(self, ws: WorkingSet) -> tuple[TitleRecord, TitleRecord]:
        title = active_title(ws, self.title_id)
        check_holder(title, self.holder)
        check_not_expired(ws, self.expires_at_us)
        check_free(title)
        return split(ws, title, self.units_first, self.request_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class PledgeTitle(Command):
    """The holder pledges a free title to a financier's wallet. (Pledges to a conditional
    payment are made by LockPayment, with the payment.)"""

    title_id: str
    holder: str
    pledgee: str
    expires_at_us: int

    def reads(self) -> Reads:
        return Reads(title_ids={self.title_id}, wallet_ids={self.pledgee})

    def apply(self, ws: WorkingSet) -> TitleRecord:
        title = active_title(ws, self.title_id)
        check_holder(title, self.holder)
        check_not_expired(ws, self.expires_at_us)
        check_free(title)
        if ws.wallet(self.pledgee) is None:
            raise not_found(Reason.WALLET_NOT_FOUND, "wallet", self.pledgee)
        move(ws, title, "PLEDGED", title.holder_wallet_id, self.request_id, pledged_to=self.pledgee)
        return title


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleasePledge(Command):
    """The pledgee (signature checked by the API layer) frees the title."""

    title_id: str
    pledgee: str
    expires_at_us: int

    def reads(self) -> Reads:
        return Reads(title_ids={self.title_id})

    def apply(self, ws: WorkingSet) -> TitleRecord:
        title = active_title(ws, self.title_id)
        if title.pledged_to != self.pledgee:
            raise SettlementError(
                Reason.TITLE_NOT_PLEDGED,
                f"title {self.title_id} is not pledged to {self.pledgee}",
                metadata={"title_id": self.title_id, "pledgee": self.pledgee},
            )
        check_not_expired(ws, self.expires_at_us)
        move(ws, title, "RELEASED", title.holder_wallet_id, self.request_id, pledged_to="")
        return title
