"""How each mutating RPC's reply is built from a command's result, and replayed from storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from condpay.v1 import operation_pb2
from google.protobuf.message import Message

from settlement.api.requests import CommandFields
from settlement.errors import idempotency_conflict
from settlement.ledger.engine import OperationInfo, StoredFailure
from settlement.ledger.records import OperationRecord


class _HasOperation(Protocol):
    @property
    def operation(self) -> operation_pb2.OperationInfo: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


ReplyT = TypeVar("ReplyT", bound=Message)


def operation_info(info: OperationInfo) -> operation_pb2.OperationInfo:
    return operation_pb2.OperationInfo(
        request_id=info.request_id,
        replayed=info.replayed,
        dry_run=info.dry_run,
        commit_seq=info.commit_seq,
    )


class Reply(Generic[ReplyT]):
    """A ReplyCodec for one reply type: ``build`` makes it from a result; ``replay`` parses the
    stored bytes and marks them as a replay."""

    def __init__(
        self,
        reply_type: type[ReplyT],
        build: Callable[[object, operation_pb2.OperationInfo], ReplyT],
    ) -> None:
        self._type = reply_type
        self._build = build

    def build(self, result: object, info: OperationInfo) -> ReplyT:
        return self._build(result, operation_info(info))

    def replay(self, stored: bytes) -> ReplyT:
        reply = self._type.FromString(stored)
        reply.operation.replayed = True  # type: ignore[attr-defined]
        return reply


def by_view(
    reply_type: type[ReplyT],
    build: Callable[[object, operation_pb2.OperationInfo, bool], ReplyT],
) -> dict[bool, Reply[ReplyT]]:
    """A reply that carries a payment, one codec per PaymentView: ``[False]`` builds the BASIC
    payment, ``[True]`` the FULL one (payment_views.full_view says which a request asked for)."""

    def codec(full: bool) -> Reply[ReplyT]:
        return Reply(reply_type, lambda result, op: build(result, op, full))

    return {False: codec(False), True: codec(True)}


def replay_stored(stored: OperationRecord, fields: CommandFields, codec: Reply[ReplyT]) -> ReplyT:
    """A retry answered from the outcome stored under its request id, as the engine answers one
    (LedgerEngine._replay): IDEMPOTENCY_KEY_REUSED if the stored call was another request, the
    stored failure (raised as StoredFailure), or the stored reply marked as a replay."""
    if stored.request_hash != fields["request_hash"] or stored.method != fields["method"]:
        raise idempotency_conflict(
            fields["request_id"], stored.method, stored.ok, stored.outcome, stored.commit_seq
        )
    if not stored.ok:
        raise StoredFailure(stored.outcome)
    return codec.replay(stored.outcome)
