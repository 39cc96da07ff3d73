"""The oracle registry as ledger commands: register, rotate, revoke. Each change makes a new
oracle set version (attestations bind the version they were signed for, so a rotation or a
revocation refuses every attestation signed before it). Keys are checked by the API layer before
a command is made (Ed25519: a valid prime-order point; BLS12-381: a valid proof of possession)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger.commands import Command
from settlement.ledger.records import OracleRecord, Reads
from settlement.ledger.working_set import WorkingSet


@dataclass(frozen=True, slots=True)
class RegistryOutcome:
    oracle: OracleRecord
    oracle_set_version: int


def _next_version(ws: WorkingSet) -> int:
    return (ws.world.registry_version or 0) + 1


def _check_key_free(ws: WorkingSet, public_key: bytes, oracle_id: str) -> None:
    """ORACLE_KEY_IN_USE if ``public_key`` is, or was, registered to another oracle id: one
    secret must never count as two quorum members. Checked under the registry's write lock (the
    command's reads), so two registrations of one key cannot both pass; the oracle_keys primary
    key refuses the second even if they did."""
    owner = ws.world.key_owners.get(public_key)
    if owner is not None and owner != oracle_id:
        raise SettlementError(
            Reason.ORACLE_KEY_IN_USE,
            "this public key is, or was, registered to another oracle; every oracle has its own",
            metadata={"field": "public_key"},
        )


def _existing(ws: WorkingSet, oracle_id: str) -> OracleRecord:
    oracle = ws.world.oracles.get(oracle_id)
    if oracle is None:
        raise not_found(Reason.ORACLE_NOT_FOUND, "oracle", oracle_id)
    if oracle.revoked:
        raise SettlementError(
            Reason.ORACLE_REVOKED, f"oracle {oracle_id!r} is revoked", metadata={"id": oracle_id}
        )
    return oracle


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterOracle(Command):
    oracle_id: str
    scheme: str
    public_key: bytes
    display_name: str

    def reads(self) -> Reads:
        return Reads(oracle_ids={self.oracle_id}, oracle_keys={self.public_key}, registry="write")

    def apply(self, ws: WorkingSet) -> RegistryOutcome:
        if self.oracle_id in ws.world.oracles:
            raise SettlementError(
                Reason.ORACLE_EXISTS,
                f"oracle {self.oracle_id!r} is already registered",
                metadata={"id": self.oracle_id},
            )
        _check_key_free(ws, self.public_key, self.oracle_id)
        oracle = OracleRecord(
            oracle_id=self.oracle_id,
            scheme=self.scheme,
            public_key=self.public_key,
            key_version=1,
            key_set_version=_next_version(ws),
            revoked=False,
            display_name=self.display_name,
            registered_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            is_new=True,
            changed=True,
        )
        ws.put_oracle(oracle)
        return RegistryOutcome(oracle, oracle.key_set_version)


@dataclass(frozen=True, slots=True, kw_only=True)
class RotateOracleKey(Command):
    oracle_id: str
    public_key: bytes

    def reads(self) -> Reads:
        return Reads(oracle_ids={self.oracle_id}, oracle_keys={self.public_key}, registry="write")

    def apply(self, ws: WorkingSet) -> RegistryOutcome:
        current = _existing(ws, self.oracle_id)
        _check_key_free(ws, self.public_key, self.oracle_id)
        oracle = replace(
            current,
            public_key=self.public_key,
            key_version=current.key_version + 1,
            key_set_version=_next_version(ws),
            updated_at_us=ws.now_us,
            changed=True,
        )
        ws.put_oracle(oracle)
        return RegistryOutcome(oracle, oracle.key_set_version)


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeOracle(Command):
    oracle_id: str

    def reads(self) -> Reads:
        return Reads(oracle_ids={self.oracle_id}, registry="write")

    def apply(self, ws: WorkingSet) -> RegistryOutcome:
        current = _existing(ws, self.oracle_id)
        version = _next_version(ws)
        oracle = replace(current, revoked=True, updated_at_us=ws.now_us, changed=True)
        ws.put_oracle(oracle)
        return RegistryOutcome(oracle, version)
