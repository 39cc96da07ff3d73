"""The core's connection to the bridge: which bridge (in process, or its gRPC server), the
validator keys it pinned, and bounded retries (tenacity) of calls that got no answer.

Every bridge call the core makes is idempotent by transfer id, so a retry after ``Unavailable``
never applies anything twice; other refusals are answers and are never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
    Bridge,
    BridgeAdminApi,
    BridgeApi,
    BridgeClient,
    Clock,
    Finality,
    Quote,
    Transfer,
    bootstrap,
    checked_public_keys,
    header_encoding,
    verify_quorum_certificate,
)
from bridges.errors import Unavailable

log = structlog.get_logger("condpay.bridge_link")

T = TypeVar("T")
# Retries of one bridge call that got no answer.
RETRY_ATTEMPTS: Final = 4
RETRY_SECONDS_MAX: Final = 3.0


@dataclass(frozen=True, slots=True)
class Verified:
    """A bridge block with a quorum certificate that verified against the pinned keys."""

    height: int
    header: bytes  # canonical encoding; its SHA-256 is what the validators signed
    block_hash: bytes
    signer_ids: tuple[str, ...]
    aggregate_signature: bytes


class BridgeLink:
    def __init__(self, api: BridgeApi, gateway: str, *, owned: bool = False) -> None:
        self.api = api
        self.gateway = gateway  # the core's participant id on the bridge
        self._owned = owned
        self._keys: dict[str, bytes] | None = None

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(RETRY_SECONDS_MAX),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.05),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.info("bridge_retry", call=what, attempt=attempt.retry_state.attempt_number)
                return await call()
        raise AssertionError("unreachable: tenacity re-raises")

    async def keys(self) -> dict[str, bytes]:
        """The validators' keys, each proof of possession checked, fetched once per process
        (the bridge's validator set is fixed at its genesis)."""
        if self._keys is None:
            self._keys = checked_public_keys(await self._call("validators", self.api.validators))
        return self._keys

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
                transfer_id,
                quote_id=quote_id,
                payer_id=self.gateway,
                payee_id=self.gateway,
                timeout_ms=timeout_ms,
            ),
        )

    async def commit(self, transfer_id: str) -> Transfer:
        return await self._call("commit", lambda: self.api.commit(transfer_id))

    async def abort(self, transfer_id: str) -> Transfer:
        return await self._call("abort", lambda: self.api.abort(transfer_id))

    async def status(self, transfer_id: str) -> Transfer:
        return await self._call("status", lambda: self.api.status(transfer_id))

    async def finality(self, transfer_id: str) -> Verified | None:
        """The transfer's block and certificate if final and verified; None while not final.
        A certificate that does not verify is logged and treated as not final."""
        answer: Finality = await self._call("finality", lambda: self.api.finality(transfer_id))
        if answer.block is None or answer.certificate is None:
            return None
        keys = await self.keys()
        block, qc = answer.block, answer.certificate
        if transfer_id not in block.transfer_ids or not verify_quorum_certificate(block, qc, keys):
            log.error("bridge_certificate_rejected", transfer_id=transfer_id, height=block.height)
            return None
        return Verified(
            block.height,
            header_encoding(block),
            block.hash,
            qc.signer_ids,
            qc.aggregate_signature,
        )

    async def close(self) -> None:
        close = getattr(self.api, "close", None)
        if self._owned and close is not None:
            await close()


async def open_bridge(
    spec: str, gateway: str, default_state: Path, clock: Clock | None = None
) -> BridgeLink | None:
    """``spec``: ``none``; ``grpc://HOST:PORT`` (a ``condpay bridge serve``); ``memory`` or
    ``sqlite:///PATH`` (in process, bootstrapped with the demo banks and the gateway); ``auto``
    (in process at ``default_state``). An in-process bridge keeps the core's ``clock``."""
    if spec == "none":
        return None
    if spec.startswith("grpc://"):
        return BridgeLink(BridgeClient(spec.removeprefix("grpc://")), gateway, owned=True)
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
    return BridgeLink(bridge, gateway, owned=True)
