"""EvidenceService: signed journal checkpoints and the proofs that an entry is in one
(settlement/ledger/checkpoints.py, condpay/checkpoints.py, docs/evidence.md)."""

from __future__ import annotations

from typing import Any

import grpc
from condpay import evidence_format as evidence
from condpay.checkpoints import key_id
from condpay.v1 import evidence_pb2, evidence_pb2_grpc

from settlement import limits
from settlement.api import convert, requests, scopes
from settlement.api.contract_service import stored_contract
from settlement.api.identity import current_caller
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import payments
from settlement.ledger.checkpoints import CheckpointRecord
from settlement.ledger.evidence_reads import EvidenceReader
from settlement.ledger.records import PaymentTerms
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
        self._evidence = EvidenceReader(runtime.read_sessions)

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

    async def GetPaymentEvidence(
        self, request: evidence_pb2.GetPaymentEvidenceRequest, context: grpc.aio.ServicerContext
    ) -> evidence_pb2.GetPaymentEvidenceResponse:
        payment_id = requests.identifier(request.payment_id, "payment_id")
        rows = await self._evidence.payment(payment_id, scopes.evidence(current_caller()))
        if rows is None:  # or not the caller's to see: the same answer
            raise not_found(Reason.PAYMENT_NOT_FOUND, "payment", payment_id)
        contract, _source = await stored_contract(self._rt, rows.contract["hash"])
        terms = PaymentTerms(
            payment_id,
            rows.payment["platform"],
            rows.contract["hash"],
            rows.params_json,
            rows.payment["payer_wallet_id"],
        )
        params_hash = payments.bound(contract, terms).hash
        seqs = [e["seq"] for e in rows.entries]
        # Every payment has its lock's entry; the first checkpoint covering the last entry
        # (signed now if none does yet) proves them all.
        found = await self._rt.checkpoints.covering(max(seqs))
        if found is None:  # the entries are there, so the head covers them
            raise AssertionError(f"no checkpoint covers entry {max(seqs)}")
        for entry, proof in zip(
            rows.entries, await self._rt.checkpoints.proofs(seqs, found), strict=True
        ):
            entry["proof"] = [p.hex() for p in proof]
        bundle: dict[str, Any] = {
            "format": evidence.FORMAT,
            "payment": rows.payment,
            "contract": rows.contract,
            "params": {"json": rows.params_json, "hash": params_hash},
            "wallets": rows.wallets,
            "changes": rows.changes,
            "documents": rows.documents,
            "financing": rows.financing,
            "assignments": rows.assignments,
            "legs": rows.legs,
            "settlements": rows.settlements,
            "entries": rows.entries,
            "checkpoint": {
                "seq": found.seq,
                "head_hash": found.head_hash.hex(),
                "tree_root": found.tree_root.hex(),
                "signed_at_us": found.signed_at_us,
                "public_key": found.public_key.hex(),
                "key_id": key_id(found.public_key),
                "signature": found.signature.hex(),
            },
        }
        return evidence_pb2.GetPaymentEvidenceResponse(
            bundle=evidence.dumps(bundle), checkpoint=checkpoint(found)
        )
