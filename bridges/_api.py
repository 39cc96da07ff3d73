"""The interface the settlement core programs against, implemented three times: the in-process
:class:`bridges.Bridge`, the gRPC :class:`bridges.BridgeClient`, and :class:`bridges.FaultyBridge`
(either of them behind injected faults). tests/bridges/test_contract.py runs one suite against
each and expects the same answers and the same errors."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace
from typing import Protocol

from bridges._model import (
    AccountBalance,
    AccountKind,
    AuditReport,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    PublishedRate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    ValidatorSet,
)
from bridges.errors import BridgeError


class BridgeApi(Protocol):
    """What a PvP needs from the bridge. Every mutating call is idempotent by its id; errors are
    bridges.errors classes. ``Unavailable`` means the outcome is unknown: retry the same call
    (same transfer id), or read :meth:`status`."""

    async def validators(self) -> ValidatorSet:
        """The validator set (keys with proofs of possession) and the quorum threshold."""
        ...

    async def quote(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
        liquidity_provider_id: str = "",
        ttl_ms: int = 0,
    ) -> Quote:
        """A firm quote for exactly one of the two amounts; ``ttl_ms`` 0 is the default."""
        ...

    async def prepare(
        self, transfer_id: str, *, quote_id: str, payer_id: str, payee_id: str, timeout_ms: int
    ) -> Transfer:
        """Reserve the payer's source amount and the provider's target amount for
        ``timeout_ms``. Refusals (expired or used quote, short funds or liquidity, no quorum) are
        remembered: the transfer is REJECTED and retries are refused alike."""
        ...

    async def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
    ) -> tuple[Quote, Transfer]:
        """:meth:`quote` for ``order`` and :meth:`prepare` with that quote, in one call (one
        transaction): the quote is never a round trip of its own. Idempotent by transfer id:
        the same order again answers the transfer as it is, with its quote; another order is
        TRANSFER_EXISTS_WITH_DIFFERENT_TERMS. Refused as :meth:`quote` or :meth:`prepare` is."""
        ...

    async def commit(self, transfer_id: str) -> Transfer:
        """Post a prepared transfer. A retry answers the same (``replayed``); refused with
        TransferAborted once it aborted, expired or was rejected."""
        ...

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Finality]:
        """:meth:`commit`, then :meth:`finality` of the same transfer, in one call: the commit's
        answer (refused as :meth:`commit` is) and its block and certificate once final. Only the
        commit can fail the call: a finality that cannot be had now is answered as not final
        (ask :meth:`finality` later)."""
        ...

    async def abort(self, transfer_id: str) -> Transfer:
        """Release a prepared transfer. A retry answers the same; refused with
        TransferCommitted once it committed; an unknown id leaves an ABORTED tombstone."""
        ...

    async def status(self, transfer_id: str) -> Transfer: ...

    async def finality(self, transfer_id: str) -> Finality:
        """The block and, once final, the quorum certificate of a committed transfer."""
        ...

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]: ...

    async def supply(self) -> tuple[CurrencySupply, ...]: ...


class BridgeAdminApi(BridgeApi, Protocol):
    """Set-up and operations: participants, rates, issuance, the audit, the block timer."""

    async def register_bank(self, participant_id: str, *, name: str = "") -> Participant: ...

    async def register_liquidity_provider(
        self, participant_id: str, *, spread_ppm: int
    ) -> Participant: ...

    async def publish_rate(self, currency: str, value: Rate) -> PublishedRate: ...

    async def issue(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance: ...

    async def redeem(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance: ...

    async def audit(self) -> AuditReport: ...

    async def tick(self) -> TickResult: ...

    async def close(self) -> None: ...


async def commit_then_finality(api: BridgeApi, transfer_id: str) -> tuple[Transfer, Finality]:
    """:meth:`BridgeApi.commit_final` as two calls of ``api``, for implementations in process."""
    transfer = await api.commit(transfer_id)
    return await with_finality(transfer, api.finality(transfer_id))


async def with_finality(
    transfer: Transfer, finality: Awaitable[Finality]
) -> tuple[Transfer, Finality]:
    """A commit's answer and its finality, as commit_final answers them: a finality that fails
    is answered as not final; once the commit has a block, the transfer names its height."""
    try:
        answer = await finality
    except BridgeError:
        return transfer, Finality(transfer.transfer_id, None, None)
    if answer.block is not None:
        transfer = replace(transfer, block_height=answer.block.height)
    return transfer, answer
