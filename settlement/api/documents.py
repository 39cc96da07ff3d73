"""The signed documents a payment change keeps for its evidence (``payment_documents``;
docs/evidence.md, "Bundle format"): what the client sent, with the keys that verified it.

Made by the API layer once a document's signatures verified, carried by the command, written
with the change in its batch (settlement/ledger/payment_rows.py). ``body`` is compact JSON,
bytes in lowercase hex.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from settlement.ledger.attestations import OracleSet
from settlement.ledger.records import DocumentRecord


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed(
    kind: str, payload: bytes, signers: Sequence[tuple[str, bytes, bytes]], idx: int = 0
) -> DocumentRecord:
    """A wallet-signed instruction: ``signers`` are (wallet id, its public key, its signature
    over ``payload``)."""
    return DocumentRecord(
        kind=kind,
        payload=payload,
        idx=idx,
        body=_json(
            {
                "signatures": [
                    {"signer": w, "public_key": key.hex(), "signature": sig.hex()}
                    for w, key, sig in signers
                ]
            }
        ),
    )


def attestation(
    statement: bytes,
    payload: bytes,
    ed25519: Sequence[tuple[str, bytes]],
    bls: tuple[Sequence[str], bytes] | None,
    registry: OracleSet,
    sources: Sequence[str],
    threshold: int,
    party: tuple[str, bytes] | None,
) -> DocumentRecord:
    """An attestation as submitted, with the oracle set it was verified against: the registry
    version and the keys of the attesting oracle's sources then (or the party's wallet key)."""
    keys = [
        {
            "oracle_id": k.oracle_id,
            "scheme": k.scheme,
            "public_key": k.public_key.hex(),
            "key_version": k.key_version,
            "revoked": k.revoked,
        }
        for k in (registry.keys[s] for s in sorted(sources) if s in registry.keys)
    ]
    return DocumentRecord(
        kind="ATTESTATION",
        payload=statement,
        body=_json(
            {
                "attributes": payload.hex(),
                "ed25519": [{"signer": s, "signature": sig.hex()} for s, sig in ed25519],
                "bls": (
                    None if bls is None else {"signers": list(bls[0]), "signature": bls[1].hex()}
                ),
                "oracle_set": {
                    "version": registry.version,
                    "sources": sorted(sources),
                    "threshold": threshold,
                    "keys": keys,
                },
                "party": (
                    None if party is None else {"wallet_id": party[0], "public_key": party[1].hex()}
                ),
            }
        ),
    )
