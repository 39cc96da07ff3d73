"""Oracle-side helpers: build an attestation and sign it.

An attestation travels as three parts:

- the **statement**: the exact bytes of a ``condpay.attestation.v1`` document
  (:class:`wallets.instructions.AttestationStatement`). It binds the oracle set version, the
  attester's name in the contract, the event id, the payment id, the contract hash, the event
  type, the payload's SHA-256 and the observed-at, issued-at and expires-at times (Unix µs);
- the **payload**: the event's attributes as canonical JSON (:func:`canonical_payload`);
- the **signatures**, every one over the statement bytes exactly: Ed25519 signatures
  ``(signer_id, signature)`` (one oracle, k of n oracles, or a party's wallet key), and/or one
  BLS12-381 aggregate ``(signer_ids, signature)`` over the same bytes.

The server verifies the signatures over the bytes it received and never rebuilds them, so sign
what :func:`build_attestation` returns and send it unchanged.

    attestation = build_attestation(
        oracle_set_version=7, oracle="customs", event_id="ev-1", payment_id="pay-1",
        contract_hash=contract_hash, event_type="customs.cleared",
        attributes={"declaration": "D-1"},
        observed_at_us=observed, issued_at_us=now, expires_at_us=now + 600_000_000,
    )
    signature = sign_ed25519(attestation.statement, "customs.cn.shenzhen", customs_key)

This module imports only ``wallets`` (the public API package never reaches into the server or
the contract language).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from wallets import bls
from wallets.currencies import INT64_MAX
from wallets.instructions import AttestationStatement
from wallets.keys import OwnerKey

AttributeValue = str | int | bool

INT64_MIN = -INT64_MAX - 1


def canonical_payload(attributes: Mapping[str, AttributeValue]) -> bytes:
    """The one encoding of an event's attributes that the server accepts.

    A JSON object, UTF-8, keys sorted by code point, no whitespace, values strings, integers
    (int64) or booleans; no floats, nulls, lists or nested objects. Strings are written raw
    except ``"`` and ``\\`` (escaped), ``\\b \\f \\n \\r \\t`` (short escapes) and the other
    control characters below U+0020 (``\\u00XX``, lowercase hex): exactly what Python's
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes.

    TypeError for a key or value of another type; ValueError for an integer beyond int64 or a
    string that is not valid Unicode (a lone surrogate)."""
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise TypeError(f"attribute names are strings, got {type(key).__name__}")
        if not isinstance(value, str | int | bool):
            raise TypeError(
                f"attribute {key!r}: values are str, int or bool, got {type(value).__name__}"
            )
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"attribute {key!r}: {value} is beyond int64")
    text = json.dumps(dict(attributes), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("an attribute name or value is not valid Unicode") from None


def payload_sha256(payload: bytes) -> str:
    """What the statement's ``payload_sha256`` holds: the payload's SHA-256, lowercase hex."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class Attestation:
    """What an oracle sends, signatures aside: the statement bytes and the payload bytes."""

    statement: bytes
    payload: bytes

    def decoded(self) -> AttestationStatement:
        return AttestationStatement.from_bytes(self.statement)


def build_attestation(
    *,
    oracle_set_version: int,
    oracle: str,
    event_id: str,
    payment_id: str,
    contract_hash: str,
    event_type: str,
    attributes: Mapping[str, AttributeValue],
    observed_at_us: int,
    issued_at_us: int,
    expires_at_us: int,
) -> Attestation:
    """The statement and payload for one observed event. ``oracle`` is the attester's name *in
    the contract* (``customs``, ``sensors``, or a wallet parameter such as ``buyer``), not a
    signer id. Raises :class:`wallets.MalformedInstruction` (naming the field) for a value the
    server would refuse to decode, and TypeError/ValueError as :func:`canonical_payload`."""
    payload = canonical_payload(attributes)
    statement = AttestationStatement(
        oracle_set_version=oracle_set_version,
        oracle=oracle,
        event_id=event_id,
        payment_id=payment_id,
        contract_hash=contract_hash,
        event_type=event_type,
        payload_sha256=payload_sha256(payload),
        observed_at_us=observed_at_us,
        issued_at_us=issued_at_us,
        expires_at_us=expires_at_us,
    ).to_bytes()
    AttestationStatement.from_bytes(statement)  # refuse to build what the server would refuse
    return Attestation(statement, payload)


class Ed25519Signature(NamedTuple):
    """One Ed25519 signature over the statement bytes: by an oracle (``signer_id`` is its
    registered oracle id) or by a party (``signer_id`` is the wallet id)."""

    signer_id: str
    signature: bytes


class BlsAggregate(NamedTuple):
    """One BLS12-381 signature aggregating the signatures of ``signer_ids`` (registered oracle
    ids) over the statement bytes."""

    signer_ids: tuple[str, ...]
    signature: bytes


def _checked(statement: bytes) -> bytes:
    AttestationStatement.from_bytes(statement)  # refuse to sign what the server would refuse
    return statement


def sign_ed25519(statement: bytes, signer_id: str, key: OwnerKey) -> Ed25519Signature:
    """One oracle's Ed25519 signature over the statement bytes."""
    return Ed25519Signature(signer_id, key.sign(_checked(statement)))


def sign_ed25519_quorum(
    statement: bytes, signers: Sequence[tuple[str, OwnerKey]]
) -> list[Ed25519Signature]:
    """k of n oracles' Ed25519 signatures: pass the k signers ``(oracle_id, key)`` that sign.
    ValueError if an oracle id repeats (it would count once)."""
    ids = [signer_id for signer_id, _ in signers]
    if len(set(ids)) != len(ids):
        raise ValueError("each oracle signs once: a repeated signer counts once")
    message = _checked(statement)
    return [Ed25519Signature(signer_id, key.sign(message)) for signer_id, key in signers]


def sign_bls_aggregate(statement: bytes, signers: Sequence[tuple[str, int]]) -> BlsAggregate:
    """One BLS aggregate of several oracles' signatures: ``signers`` are ``(oracle_id,
    secret_key)`` pairs (:func:`wallets.bls.secret_key`). ValueError if none, or if an oracle
    id repeats."""
    ids = tuple(signer_id for signer_id, _ in signers)
    if not ids:
        raise ValueError("a BLS aggregate needs at least one signer")
    if len(set(ids)) != len(ids):
        raise ValueError("each oracle signs once: a repeated signer counts once")
    message = _checked(statement)
    signature = bls.backend().sign_aggregate([secret for _, secret in signers], message)
    return BlsAggregate(ids, signature)


def sign_party(statement: bytes, wallet_id: str, key: OwnerKey) -> Ed25519Signature:
    """A party's attestation (``by buyer``): the signature of the wallet the contract's
    parameter names, with that wallet's owner key."""
    return Ed25519Signature(wallet_id, key.sign(_checked(statement)))


class BlsRegistration(NamedTuple):
    """What RegisterOracle / RotateOracleKey need for a BLS key: the 48-byte public key and its
    proof of possession (the server refuses a BLS key without a valid one)."""

    public_key: bytes
    proof_of_possession: bytes


def bls_registration(secret_key: int) -> BlsRegistration:
    scheme = bls.backend()
    return BlsRegistration(scheme.public_key(secret_key), scheme.pop_prove(secret_key))
