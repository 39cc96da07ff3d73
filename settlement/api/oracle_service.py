"""OracleService: the oracle registry (central bank) and attestations (oracles, platforms).

An attestation is verified here against the registry as it stands (settlement/ledger/
attestations.py: statement, routing, payload, freshness, signatures, quorum); the command then
checks, under the batch's locks, that the registry has not changed since (the oracle set version
the statement binds is still the current one) and that the event id was never seen before.
"""

from __future__ import annotations

import functools

import grpc
from condpay.v1 import operation_pb2, oracle_pb2, oracle_pb2_grpc

from settlement import limits
from settlement.api import documents, requests, scopes
from settlement.api import payment_views as views
from settlement.api.contract_service import stored_contract
from settlement.api.identity import current_caller
from settlement.api.replies import Reply, by_view
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, oracles, payments
from settlement.ledger.attestations import (
    AttestationLimits,
    PaymentBinding,
    Submission,
    check_registration,
    decode_statement,
    verify_attestation,
)
from settlement.ledger.records import OracleRecord
from settlement.runtime import Runtime

_SERVICE = "/condpay.v1.OracleService/"
_SCHEMES = {oracle_pb2.KEY_SCHEME_ED25519: "ED25519", oracle_pb2.KEY_SCHEME_BLS12_381: "BLS12_381"}
_SCHEME_NAMES = {v: k for k, v in _SCHEMES.items()}
LIMITS = AttestationLimits(
    freshness_window_us=limits.ATTESTATION_FRESHNESS_SECONDS * 1_000_000,
    future_skew_us_max=limits.ATTESTATION_CLOCK_SKEW_SECONDS * 1_000_000,
    lifetime_us_max=limits.ATTESTATION_LIFETIME_SECONDS_MAX * 1_000_000,
)


def oracle_view(record: OracleRecord) -> oracle_pb2.Oracle:
    return oracle_pb2.Oracle(
        oracle_id=record.oracle_id,
        scheme=_SCHEME_NAMES.get(record.scheme, oracle_pb2.KEY_SCHEME_UNSPECIFIED),
        public_key=record.public_key,
        key_version=record.key_version,
        revoked=record.revoked,
        display_name=record.display_name,
        key_set_version=record.key_set_version,
    )


def _registry_reply(response_type: type) -> Reply:  # type: ignore[type-arg]
    def build(result: object, op: operation_pb2.OperationInfo) -> object:
        assert isinstance(result, oracles.RegistryOutcome)
        return response_type(
            operation=op,
            oracle=oracle_view(result.oracle),
            oracle_set_version=result.oracle_set_version,
        )

    return Reply(response_type, build)


REGISTER = _registry_reply(oracle_pb2.RegisterOracleResponse)
ROTATE = _registry_reply(oracle_pb2.RotateOracleKeyResponse)
REVOKE = _registry_reply(oracle_pb2.RevokeOracleResponse)


def _attestation_reply(
    result: object, op: operation_pb2.OperationInfo, full: bool
) -> oracle_pb2.SubmitAttestationResponse:
    assert isinstance(result, payments.AttestationOutcome)
    snapshot = result.payment
    return oracle_pb2.SubmitAttestationResponse(
        operation=op,
        attestation=views.attestation(result.attestation),
        legs=[views.leg(leg) for leg in result.legs],
        payment=views.payment(snapshot.payment, snapshot.contract, snapshot.source, full=full),
    )


ATTEST = by_view(oracle_pb2.SubmitAttestationResponse, _attestation_reply)


class OracleService(oracle_pb2_grpc.OracleServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    # -- the registry --------------------------------------------------------------------------
    async def RegisterOracle(
        self, request: oracle_pb2.RegisterOracleRequest, context: grpc.aio.ServicerContext
    ) -> oracle_pb2.RegisterOracleResponse:
        base = requests.command_fields(_SERVICE + "RegisterOracle", current_caller(), request)
        try:
            scheme = _SCHEMES.get(request.scheme)
            if scheme is None:
                raise requests.invalid(
                    Reason.INVALID_PUBLIC_KEY, "scheme", "scheme must be ED25519 or BLS12_381"
                )
            check_registration(scheme, request.public_key, request.proof_of_possession)
            command: commands.Command = oracles.RegisterOracle(
                **base,
                oracle_id=requests.identifier(request.oracle_id, "oracle_id"),
                scheme=scheme,
                public_key=request.public_key,
                display_name=requests.text(request.display_name, "display_name", 140),
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REGISTER)

    async def RotateOracleKey(
        self, request: oracle_pb2.RotateOracleKeyRequest, context: grpc.aio.ServicerContext
    ) -> oracle_pb2.RotateOracleKeyResponse:
        base = requests.command_fields(_SERVICE + "RotateOracleKey", current_caller(), request)
        try:
            oracle_id = requests.identifier(request.oracle_id, "oracle_id")
            current = await self._oracle(oracle_id)
            check_registration(current.scheme, request.public_key, request.proof_of_possession)
            command: commands.Command = oracles.RotateOracleKey(
                **base, oracle_id=oracle_id, public_key=request.public_key
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, ROTATE)

    async def RevokeOracle(
        self, request: oracle_pb2.RevokeOracleRequest, context: grpc.aio.ServicerContext
    ) -> oracle_pb2.RevokeOracleResponse:
        base = requests.command_fields(_SERVICE + "RevokeOracle", current_caller(), request)
        try:
            requests.text(request.reason, "reason", 140)
            command: commands.Command = oracles.RevokeOracle(
                **base, oracle_id=requests.identifier(request.oracle_id, "oracle_id")
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REVOKE)

    async def _oracle(self, oracle_id: str) -> OracleRecord:
        _, records = await self._rt.reader.oracle_set()
        found = next((o for o in records if o.oracle_id == oracle_id), None)
        if found is None:
            raise not_found(Reason.ORACLE_NOT_FOUND, "oracle", oracle_id)
        return found

    async def GetOracleSet(
        self, request: oracle_pb2.GetOracleSetRequest, context: grpc.aio.ServicerContext
    ) -> oracle_pb2.GetOracleSetResponse:
        version, records = await self._rt.reader.oracle_set()
        return oracle_pb2.GetOracleSetResponse(
            version=version, oracles=[oracle_view(o) for o in records]
        )

    # -- attestations --------------------------------------------------------------------------
    async def SubmitAttestation(
        self, request: oracle_pb2.SubmitAttestationRequest, context: grpc.aio.ServicerContext
    ) -> oracle_pb2.SubmitAttestationResponse:
        base = requests.command_fields(_SERVICE + "SubmitAttestation", current_caller(), request)
        full = False
        try:
            full = views.full_view(request.view, mutating=True)
            command: commands.Command = await self._attestation(request, base)
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, ATTEST[full])

    async def _attestation(
        self, request: oracle_pb2.SubmitAttestationRequest, base: requests.CommandFields
    ) -> payments.SubmitAttestation:
        if not request.statement:
            raise requests.invalid(Reason.MISSING_FIELD, "statement", "statement is required")
        statement = decode_statement(request.statement)
        # What the lock fixed (platform, contract, parties) and the registry at the statement's
        # version come from caches that cannot go stale (settlement/ledger/directory.py,
        # oracle_sets.py); the payment's state is read, under its lock, by the write batch.
        terms = await self._rt.directory.payment_terms(statement.payment_id)
        contract = None
        if terms is not None:
            contract, _source = await stored_contract(self._rt, terms.contract_hash)
        # An oracle attests only to payments whose contract names it among an oracle's sources;
        # a platform relays only for its own payments (scopes.may_attest). Any other payment
        # answers as one that does not exist.
        if (
            terms is None
            or contract is None
            or not scopes.may_attest(current_caller(), terms.platform, contract)
        ):
            raise not_found(Reason.PAYMENT_NOT_FOUND, "payment", statement.payment_id)
        parties = payments.wallet_params(contract, payments.bound(contract, terms))
        keys = {}
        for wallet_id in parties.values():
            wallet = await self._rt.directory.wallet(wallet_id)
            if wallet is not None:
                keys[wallet_id] = wallet.owner_public_key
        registry = await self._rt.oracle_sets.for_statement(statement.oracle_set_version)
        aggregate = None
        if request.HasField("bls_aggregate"):
            aggregate = (tuple(request.bls_aggregate.signer_ids), request.bls_aggregate.signature)
        check = functools.partial(
            verify_attestation,
            Submission(
                request.statement,
                request.payload,
                tuple((s.signer_id, s.signature) for s in request.signatures),
                aggregate,
            ),
            PaymentBinding(terms.payment_id, contract, parties, keys),
            registry,
            self._rt.clock.now_us(),
            LIMITS,
        )
        # An aggregate's pairings run beside the loop; the rest costs less than the hand-off.
        verified = check() if aggregate is None else await self._rt.verify_threads.run(check)
        spec = contract.oracle(statement.oracle)
        party_wallet = parties.get(statement.oracle) if spec is None else None
        ed25519 = tuple((s.signer_id, s.signature) for s in request.signatures)
        document = documents.attestation(
            request.statement,
            request.payload,
            ed25519,
            aggregate,
            registry,
            () if spec is None else spec.sources,
            1 if spec is None else spec.threshold,
            None if party_wallet is None else (party_wallet, keys[party_wallet]),
        )
        return payments.SubmitAttestation(
            **base,
            payment_id=terms.payment_id,
            event=verified.event,
            signer_ids=verified.signer_ids,
            oracle_set_version=verified.statement.oracle_set_version,
            statement=request.statement,
            documents=(document,),
        )
