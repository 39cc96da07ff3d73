"""EvidenceService: signed journal checkpoints and the proofs that an entry is in one
(settlement/ledger/checkpoints.py, condpay/checkpoints.py, docs/evidence.md)."""

from __future__ import annotations

import grpc
from condpay.checkpoints import key_id
from condpay.v1 import evidence_pb2, evidence_pb2_grpc

from settlement import limits
from settlement.api import convert, requests, scopes
from settlement.api.identity import current_caller
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger.checkpoints import CheckpointRecord
from settlement.runtime import Runtime

_SERVICE = "/condpay.v1.EvidenceService/"


def checkpoint(record: CheckpointRecord) -> evidence_pb2.Checkpoint:
    return evidence_pb2.Checkpoint(
        seq=record.seq,
        head_hash=record.head_hash,
        tree_root=record.tree_root,
        signed_at=convert.timestamp(record.signed_at_us),
        public_key=record.public_key,
        signature=record.signature,
    )


def _sequence(value: int, field: str) -> int:
    """A journal sequence number the request must carry (entries count from 1)."""
    if value <= 0:
        raise requests.invalid(Reason.MISSING_FIELD, field, f"{field} must be 1 or more")
    return value


def _no_checkpoint(entry_seq: int, checkpoint_seq: int = 0) -> SettlementError:
    message = (
        f"checkpoint {checkpoint_seq} does not exist or does not cover entry {entry_seq}"
        if checkpoint_seq
        else f"the journal has no entry {entry_seq} yet"
    )
    return SettlementError(
        Reason.CHECKPOINT_NOT_FOUND,
        message,
        metadata={"entry_seq": str(entry_seq), "checkpoint_seq": str(checkpoint_seq)},
    )


class EvidenceService(evidence_pb2_grpc.EvidenceServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def GetCheckpointKey(
        self, request: evidence_pb2.GetCheckpointKeyRequest, context: grpc.aio.ServicerContext
    ) -> evidence_pb2.GetCheckpointKeyResponse:
        public_key = self._rt.checkpoints.public_key
        return evidence_pb2.GetCheckpointKeyResponse(
            public_key=public_key, key_id=key_id(public_key)
        )

    async def ListCheckpoints(
        self, request: evidence_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> evidence_pb2.ListCheckpointsResponse:
        caller = current_caller()
        page_size = scopes.page_size(
            request.page_size, limits.PAGE_SIZE_DEFAULT, limits.PAGE_SIZE_MAX
        )
        method, filters = _SERVICE + "ListCheckpoints", {"after_seq": str(request.after_seq)}
        cursor = self._rt.page_tokens.open(caller, method, filters, request.page_token)
        after = int(cursor) if cursor else max(request.after_seq, 0)
        found = await self._rt.checkpoints.after(after, page_size + 1)
        more = len(found) > page_size
        found = found[:page_size]
        return evidence_pb2.ListCheckpointsResponse(
            checkpoints=[checkpoint(c) for c in found],
            next_page_token=(
                self._rt.page_tokens.seal(caller, method, filters, str(found[-1].seq))
                if more
                else ""
            ),
        )

    async def GetCheckpoint(
        self, request: evidence_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> evidence_pb2.GetCheckpointResponse:
        seq = _sequence(request.seq, "seq")
        found = await self._rt.checkpoints.covering(seq)
        if found is None:
            raise _no_checkpoint(seq)
        return evidence_pb2.GetCheckpointResponse(checkpoint=checkpoint(found))

    async def GetInclusionProof(
        self, request: evidence_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> evidence_pb2.GetInclusionProofResponse:
        entry_seq = _sequence(request.entry_seq, "entry_seq")
        entries = await self._rt.reader.journal(
            None, entry_seq - 1, 1, scopes.journal_postings(current_caller())
        )
        if not entries or entries[0].seq != entry_seq:
            raise not_found(Reason.ENTRY_NOT_FOUND, "journal entry", str(entry_seq))
        checkpoints = self._rt.checkpoints
        if request.checkpoint_seq:
            found = (
                await checkpoints.exactly(request.checkpoint_seq)
                if request.checkpoint_seq >= entry_seq
                else None
            )
            if found is None:
                raise _no_checkpoint(entry_seq, request.checkpoint_seq)
        else:
            found = await checkpoints.covering(entry_seq)
            if found is None:  # the entry is there, so the head covers it: a race with nothing
                raise _no_checkpoint(entry_seq)
        return evidence_pb2.GetInclusionProofResponse(
            entry=convert.entry(entries[0]),
            checkpoint=checkpoint(found),
            proof=await checkpoints.proof(entry_seq, found),
        )
