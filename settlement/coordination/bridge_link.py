"""The core's connection to the bridge: which bridge (in process, or its gRPC server), the
validator keys it pinned, and bounded retries (tenacity) of calls that got no answer.

Over gRPC the link is authenticated both ways: the core presents its gateway's bridge identity
(``condpay-bridge://bank/<gateway>``, from ``CONDPAY_BRIDGE_CERTS_DIR``) and verifies the bridge's
server certificate against the CA; it pins the validator set from configuration
(``CONDPAY_BRIDGE_VALIDATORS``, the file ``bridge serve --export-validators`` writes) and refuses a
bridge whose ListValidators answer differs before it sends that bridge anything else. The
transfer ids it uses on the bridge are the gateway's: ``<gateway>:<settlement id>.<attempt>``.
In-process bridges (memory, sqlite) are the same process: nothing to authenticate or pin.

Every bridge call the core makes is idempotent by transfer id, so a retry after ``Unavailable``
never applies anything twice; other refusals are answers and are never retried.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from bridges import (
    DEMO_BANKS,
    BlockHeader,
    Bridge,
    BridgeAdminApi,
    BridgeApi,
    BridgeClient,
    ClientTls,
    Clock,
    Finality,
    Identity,
    Kind,
    MarketOrder,
    QuorumCertificate,
    Quote,
    Transfer,
    bootstrap,
    checked_public_keys,
    header_encoding,
    load_pinned,
    verify_quorum_certificate,
)
from bridges.errors import BridgeError, Reason, Unavailable, error
from settlement import tracing
from settlement.coordination.shared_verdicts import SharedVerdicts, fingerprint, keys_digest

log = structlog.get_logger("condpay.bridge_link")

T = TypeVar("T")
# Retries of one bridge call that got no answer.
RETRY_ATTEMPTS: Final = 4
RETRY_SECONDS_MAX: Final = 3.0
# Verified blocks remembered (the most recent heights): a settlement whose block is among them
# is not verified again. A block holds up to bridges.limits.BLOCK_TRANSFERS_MAX commits.
VERIFIED_BLOCKS_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class Verified:
    """A bridge block with a quorum certificate that verified against the pinned keys."""

    height: int
    header: bytes  # canonical encoding; its SHA-256 is what the validators signed
    block_hash: bytes
    signer_ids: tuple[str, ...]
    aggregate_signature: bytes


class CertificateCache:
    """Each block's quorum certificate verified once: height -> the exact header hash, signers and
    aggregate signature that verified, under one set of validator keys.

    A hit needs all of it to be identical (the header's hash recomputed from the header the
    bridge sent, never the transmitted one): anything else at a known height is verified again in
    full, and a certificate that verifies for *another* block at a height already verified is
    refused (two blocks at one height: the validators equivocated, or the bridge lies). Keys that
    differ from the ones the cache was filled under empty it.

    ``shared``: the table of the other workers on this machine (settlement/coordination/
    shared_verdicts.py). A certificate not in this cache whose fingerprint another worker wrote
    there is taken as verified (counted in ``shared_hits``), after waiting for it while another
    worker is verifying it; one this cache verified is written there. Everything else (the
    equivocation check, this cache) is the same either way."""

    def __init__(
        self, capacity: int = VERIFIED_BLOCKS_MAX, shared: SharedVerdicts | None = None
    ) -> None:
        self._capacity = capacity
        self._shared = shared
        self._keys: dict[str, bytes] = {}
        self._keys_digest = keys_digest({})
        self._blocks: OrderedDict[int, tuple[bytes, tuple[str, ...], bytes]] = OrderedDict()
        self.hits = 0
        self.shared_hits = 0
        self.verifications = 0

    async def verify(
        self, header: BlockHeader, qc: QuorumCertificate, keys: Mapping[str, bytes]
    ) -> bool:
        """As :func:`bridges.verify_quorum_certificate`, remembering what verified."""
        return await self.verified_encoding(header, qc, keys) is not None

    async def verified_encoding(
        self, header: BlockHeader, qc: QuorumCertificate, keys: Mapping[str, bytes]
    ) -> bytes | None:
        """As :meth:`verify`; the header's canonical encoding (what its hash is of) if it
        verifies, None if not: the caller keeps it without encoding the header again."""
        if keys != self._keys:
            self._keys = dict(keys)
            self._keys_digest = keys_digest(self._keys)
            self._blocks.clear()
        try:
            encoding = header_encoding(header)
        except (ValueError, TypeError, OverflowError, struct.error, AttributeError):
            return None
        block_hash = hashlib.sha256(encoding).digest()
        entry = (block_hash, tuple(qc.signer_ids), bytes(qc.aggregate_signature))
        known = self._blocks.get(header.height)
        if known is not None and known == entry and bytes(qc.block_hash) == block_hash:
            self._blocks.move_to_end(header.height)
            self.hits += 1
            return encoding
        if not await self._verdict(header, block_hash, qc, keys):
            return None
        if keys != self._keys:  # other keys came while this waited: not final yet, ask again
            return None
        known = self._blocks.get(header.height)
        if known is not None and known[0] != block_hash:
            log.critical(
                "bridge_conflicting_blocks",
                height=header.height,
                verified=known[0].hex(),
                answered=block_hash.hex(),
                why="a second block with a quorum certificate at a height already verified",
            )
            return None
        self._blocks[header.height] = entry
        self._blocks.move_to_end(header.height)
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)
        return encoding

    async def _verdict(
        self,
        header: BlockHeader,
        block_hash: bytes,
        qc: QuorumCertificate,
        keys: Mapping[str, bytes],
    ) -> bool:
        """Whether the certificate verifies: told by another worker, or verified here (and
        then told to the others)."""
        shared = self._shared
        if shared is None:
            self.verifications += 1
            return verify_quorum_certificate(header, qc, keys)
        mark = fingerprint(self._keys_digest, header, block_hash, qc)
        if await shared.told(header.height, mark):  # or claimed for this worker to verify
            self.shared_hits += 1
            return True
        self.verifications += 1
        if not verify_quorum_certificate(header, qc, keys):
            return False
        shared.remember(header.height, mark)
        return True


class UntrustedBridge(Exception):
    """The bridge answered with a validator set other than the pinned one."""


class BridgeLink:
    def __init__(
        self,
        api: BridgeApi,
        gateway: str,
        *,
        owned: bool = False,
        pinned: dict[str, bytes] | None = None,
        verdicts: SharedVerdicts | None = None,
    ) -> None:
        """``pinned``: the validator keys from configuration; None for an in-process bridge
        (the same process: its own keys are the truth). ``verdicts``: the certificates the
        other workers on this machine verified (:class:`CertificateCache`)."""
        self.api = api
        self.gateway = gateway  # the core's participant id on the bridge
        self._owned = owned
        self._pinned = pinned
        self._keys: dict[str, bytes] | None = None
        self._mismatch_logged = False
        self.certificates = CertificateCache(shared=verdicts)
        # Whether the last call got an answer (None before the first): the link's state, for
        # metrics. A refusal is an answer; only an unreachable bridge makes it False.
        self.answered: bool | None = None

    def bridge_transfer_id(self, transfer_id: str) -> str:
        """The id on the bridge of the core's transfer ``<settlement id>.<attempt>``: the
        gateway's own namespace, which only the gateway may prepare in."""
        return f"{self.gateway}:{transfer_id}"

    async def verify_validators(self) -> dict[str, bytes]:
        """The bridge's validator keys (proofs of possession checked), once they equal the pinned
        set; a differing answer is refused (UntrustedBridge, logged once) and asked again next
        time, so the genuine bridge coming back is trusted again."""
        if self._keys is not None:
            return self._keys
        keys = checked_public_keys(await self._raw_call("validators", self.api.validators))
        if self._pinned is not None and keys != self._pinned:
            if not self._mismatch_logged:
                self._mismatch_logged = True
                log.critical(
                    "bridge_validators_mismatch",
                    pinned=sorted(self._pinned),
                    answered=sorted(keys),
                    why="the bridge is not the one whose validator set is configured "
                    "(CONDPAY_BRIDGE_VALIDATORS); nothing is sent to it",
                )
            raise UntrustedBridge("the bridge's validator set differs from the pinned one")
        self._keys = keys
        return keys

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A call to a bridge whose validator set is the pinned one. An untrusted bridge is,
        to the coordinator, a bridge that did not answer: nothing moves, the sweep asks later."""
        try:
            await self.verify_validators()
        except UntrustedBridge as exc:
            raise error(Reason.UNREACHABLE, str(exc)) from None
        return await self._raw_call(what, call)

    async def _raw_call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(RETRY_SECONDS_MAX),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.05),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.info("bridge_retry", call=what, attempt=attempt.retry_state.attempt_number)
                try:
                    with tracing.span(f"bridge.{what}"):
                        answer = await call()
                except Unavailable:
                    self.answered = False
                    raise
                except BridgeError:
                    self.answered = True
                    raise
                self.answered = True
                return answer
        raise AssertionError("unreachable: tenacity re-raises")

    async def keys(self) -> dict[str, bytes]:
        """The validators' keys, each proof of possession checked, fetched once per process
        (the bridge's validator set is fixed at its genesis) and equal to the pinned set."""
        try:
            return await self.verify_validators()
        except UntrustedBridge as exc:
            raise error(Reason.UNREACHABLE, str(exc)) from None

    async def quote(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
    ) -> Quote:
        return await self._call(
            "quote",
            lambda: self.api.quote(
                source_currency,
                target_currency,
                source_amount_minor=source_amount_minor,
                target_amount_minor=target_amount_minor,
            ),
        )

    async def prepare(self, transfer_id: str, quote_id: str, timeout_ms: int) -> Transfer:
        return await self._call(
            "prepare",
            lambda: self.api.prepare(
                self.bridge_transfer_id(transfer_id),
                quote_id=quote_id,
                payer_id=self.gateway,
                payee_id=self.gateway,
                timeout_ms=timeout_ms,
            ),
        )

    async def prepare_at_market(
        self, transfer_id: str, order: MarketOrder, timeout_ms: int
    ) -> tuple[Quote, Transfer]:
        """The quote for ``order`` and the gateway-to-gateway prepare with it, in one call."""
        return await self._call(
            "prepare",
            lambda: self.api.prepare_at_market(
                self.bridge_transfer_id(transfer_id),
                order=order,
                payer_id=self.gateway,
                payee_id=self.gateway,
                timeout_ms=timeout_ms,
            ),
        )

    async def commit(self, transfer_id: str) -> Transfer:
        return await self._call(
            "commit", lambda: self.api.commit(self.bridge_transfer_id(transfer_id))
        )

    async def abort(self, transfer_id: str) -> Transfer:
        return await self._call(
            "abort", lambda: self.api.abort(self.bridge_transfer_id(transfer_id))
        )

    async def status(self, transfer_id: str) -> Transfer:
        return await self._call(
            "status", lambda: self.api.status(self.bridge_transfer_id(transfer_id))
        )

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Verified | None]:
        """:meth:`commit`, answered once the commit's block is certified, as :meth:`finality`
        answers it: one round trip instead of two."""
        bridge_id = self.bridge_transfer_id(transfer_id)
        transfer, answer = await self._call("commit", lambda: self.api.commit_final(bridge_id))
        try:
            return transfer, await self._verified(transfer_id, answer)
        except BridgeError as error:  # the commit stands; its finality is asked for later
            log.info("bridge_finality_later", transfer_id=transfer_id, error=str(error))
            return transfer, None

    async def finality(self, transfer_id: str) -> Verified | None:
        """The transfer's block and certificate if final and verified; None while not final.
        A certificate that does not verify is logged and treated as not final."""
        bridge_id = self.bridge_transfer_id(transfer_id)
        answer: Finality = await self._call("finality", lambda: self.api.finality(bridge_id))
        return await self._verified(transfer_id, answer)

    async def _verified(self, transfer_id: str, answer: Finality) -> Verified | None:
        if answer.block is None or answer.certificate is None:
            return None
        keys = await self.keys()
        block, qc = answer.block, answer.certificate
        bridge_id = self.bridge_transfer_id(transfer_id)
        encoding = (
            await self.certificates.verified_encoding(block, qc, keys)
            if bridge_id in block.transfer_ids
            else None
        )
        if encoding is None:
            log.error("bridge_certificate_rejected", transfer_id=transfer_id, height=block.height)
            return None
        return Verified(
            block.height,
            encoding,
            hashlib.sha256(encoding).digest(),
            qc.signer_ids,
            qc.aggregate_signature,
        )

    async def close(self) -> None:
        certificates = self.certificates
        log.info(
            "bridge_certificates",
            verified=certificates.verifications,
            told_by_other_workers=certificates.shared_hits,
            from_cache=certificates.hits,
        )
        close = getattr(self.api, "close", None)
        if self._owned and close is not None:
            await close()


@dataclass(frozen=True, slots=True)
class LinkSecurity:
    """How the core reaches a ``grpc://`` bridge. ``insecure``: plaintext to a bridge in its
    development mode, the gateway's identity as metadata. Otherwise mutual TLS with the files of
    ``certs_dir`` (ca.pem and participants/bank_<gateway>.pem, .key). ``validators``: the pinned
    validator set file (required for grpc://)."""

    certs_dir: Path | None = None
    insecure: bool = False
    validators: Path | None = None


async def open_bridge(
    spec: str,
    gateway: str,
    default_state: Path,
    clock: Clock | None = None,
    security: LinkSecurity | None = None,
    verdicts: SharedVerdicts | None = None,
) -> BridgeLink | None:
    """``spec``: ``none``; ``grpc://HOST:PORT`` (a ``condpay bridge serve``); ``memory`` or
    ``sqlite:///PATH`` (in process, bootstrapped with the demo banks and the gateway); ``auto``
    (in process at ``default_state``). An in-process bridge keeps the core's ``clock``.
    ValueError for a grpc:// bridge without TLS files or pinned validators, and
    UntrustedBridge for one that answers with other validators than the pinned ones.
    ``verdicts``: shared with the other workers on this machine (:class:`CertificateCache`)."""
    if spec == "none":
        return None
    if spec.startswith("grpc://"):
        target = spec.removeprefix("grpc://")
        return await _open_remote(target, gateway, security or LinkSecurity(), verdicts)
    if spec == "memory":
        path: str | Path = ":memory:"
    elif spec.startswith("sqlite:///"):
        path = Path(spec.removeprefix("sqlite:///"))
    elif spec == "auto":
        path = default_state
    else:
        raise ValueError(
            f"CONDPAY_BRIDGE: not none, auto, memory, sqlite:///PATH or grpc://HOST:PORT: {spec!r}"
        )
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    bridge = await Bridge.open(path, clock=clock)
    admin: BridgeAdminApi = bridge
    await bootstrap(admin, banks={**DEMO_BANKS, gateway: "condpay settlement core gateway"})
    return BridgeLink(bridge, gateway, owned=True, verdicts=verdicts)


async def _open_remote(
    target: str, gateway: str, security: LinkSecurity, verdicts: SharedVerdicts | None
) -> BridgeLink:
    if security.validators is None:
        raise ValueError(
            "CONDPAY_BRIDGE=grpc://... needs CONDPAY_BRIDGE_VALIDATORS: the bridge's validator "
            "set, pinned (the file `condpay bridge serve --export-validators PATH` writes)"
        )
    try:
        pinned = load_pinned(security.validators.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"CONDPAY_BRIDGE_VALIDATORS {security.validators}: {exc}") from None
    identity = Identity(Kind.BANK, gateway)
    if security.insecure:
        client = BridgeClient(target, identity=identity)
    else:
        if security.certs_dir is None:
            raise ValueError("CONDPAY_BRIDGE_CERTS_DIR is required for a grpc:// bridge over TLS")
        client = BridgeClient(target, tls=ClientTls.for_participant(security.certs_dir, identity))
    link = BridgeLink(client, gateway, owned=True, pinned=pinned, verdicts=verdicts)
    try:
        await link.verify_validators()
    except BridgeError:
        log.warning("bridge_not_verified_yet", target=target, why="no answer; verified on use")
    except UntrustedBridge:
        await link.close()
        raise
    return link
