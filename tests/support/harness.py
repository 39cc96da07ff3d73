"""A real condpay server in the test's event loop, clients for it, and the after-test audit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condpay.client import Client

from settlement.api.server import RunningServer, start_server
from settlement.api.status import StatusCodec
from settlement.certs import init_certificates, issue_certificate, parse_identity
from settlement.clock import Clock
from settlement.config import Settings
from settlement.ledger.audit import audit_ledger
from settlement.ledger.deadlines import DeadlineSweeper
from settlement.ledger.engine import LedgerEngine
from settlement.ledger.store import LedgerStore
from settlement.observability import listen
from settlement.runtime import Runtime
from wallets import OwnerKey
from wallets.currencies import CURRENCIES

CENTRAL_BANK = "central_bank/pboc"
# Server log events that mean a bug: a test that produces one fails at teardown, unless it says
# it provokes them on purpose (Harness.allowed_log_events).
BUG_EVENTS = frozenset({"unhandled_error", "undeclared_reason"})
# Reads everything (a central bank sees only its own currencies' balances and entries).
AUDITOR = "auditor/audit"


def central_bank_of(currency: str) -> str:
    """The caller that may issue and redeem ``currency``: its own central bank."""
    return f"central_bank/{CURRENCIES[currency].central_bank.lower()}"


@dataclass
class Harness:
    runtime: Runtime
    server: RunningServer
    address: str
    clients: list[Client] = field(default_factory=list)
    audit_after: bool = True
    # Mutual TLS: the `condpay certs` directory; clients get a certificate for their identity.
    certs_dir: Path | None = None
    # The server's bug events (BUG_EVENTS) logged so far, and those a test provokes on purpose.
    bug_events: list[dict[str, Any]] = field(default_factory=list)
    allowed_log_events: set[str] = field(default_factory=set)

    def client(self, caller: str = CENTRAL_BANK) -> Client:
        if self.certs_dir is not None:
            stem = self.certs_dir / "clients" / caller.replace("/", "_")
            if not stem.with_suffix(".pem").exists():
                issue_certificate(self.certs_dir, parse_identity(caller))
        client = Client(self.address, caller=caller, certs_dir=self.certs_dir)
        self.clients.append(client)
        return client

    async def institution(self, institution_id: str = "icbc-sz") -> OwnerKey:
        """Register an institution; returns its reserve wallet key."""
        key = OwnerKey.from_seed(institution_id.encode().ljust(32, b"\0")[:32])
        await self.client().register_institution(
            institution_id, institution_id.upper(), key.public_key
        )
        return key

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.server.stop(grace_seconds=0)


@contextlib.asynccontextmanager
async def start_harness(
    database_url: str,
    *,
    clock: Clock | None = None,
    writers: int = 2,
    wrap_store: Callable[[LedgerStore], LedgerStore] | None = None,
    certs_dir: Path | None = None,
    bridge: str = "memory",
    pvp_hold_ms: int = 30_000,
    pvp_margin_ms: int = 5_000,
    instruction_ttl_max_seconds: int = 86_400,
    checkpoint_every_entries: int = 1000,
    checkpoint_every_seconds: int = 10,
) -> AsyncIterator[Harness]:
    """``wrap_store`` puts a test double (fault injection) between the engine and the store;
    ``certs_dir`` (a fresh folder) serves over mutual TLS with a CA made there; ``bridge`` is
    CONDPAY_BRIDGE (default: a fresh in-process bridge on the server's clock);
    ``instruction_ttl_max_seconds`` is CONDPAY_INSTRUCTION_TTL_MAX_SECONDS and the
    ``checkpoint_*`` ones CONDPAY_CHECKPOINT_*."""
    if certs_dir is not None:
        init_certificates(certs_dir, [parse_identity(CENTRAL_BANK)])
    settings = Settings(
        addr="127.0.0.1:0",
        database_url=database_url,
        insecure=certs_dir is None,
        certs_dir=str(certs_dir or ""),
        log_calls=False,
        writers=writers,
        bridge=bridge,
        pvp_hold_ms=pvp_hold_ms,
        pvp_margin_ms=pvp_margin_ms,
        instruction_ttl_max_seconds=instruction_ttl_max_seconds,
        checkpoint_every_entries=checkpoint_every_entries,
        checkpoint_every_seconds=checkpoint_every_seconds,
    )
    runtime = Runtime(settings, clock)
    if wrap_store is not None:
        runtime.store = wrap_store(runtime.store)
        runtime.engine = LedgerEngine(
            runtime.store, runtime.clock, StatusCodec(), runtime.directory, runtime.notifier
        )
        runtime.deadlines = DeadlineSweeper(
            runtime.deadlines.reads, runtime.engine, runtime.clock, runtime.faults
        )
    await runtime.start()
    server = await start_server(runtime, "127.0.0.1:0")
    harness = Harness(runtime, server, f"127.0.0.1:{server.port}", certs_dir=certs_dir)

    def record(event: Any) -> None:
        if event.get("event") in BUG_EVENTS:
            harness.bug_events.append(dict(event))

    try:
        with listen(record):
            yield harness
            if harness.audit_after:
                report = await audit_ledger(runtime.sql)
                assert report.ok, "ledger audit failed:\n" + "\n".join(report.failures)
            bugs = [e for e in harness.bug_events if e["event"] not in harness.allowed_log_events]
            assert not bugs, "the server logged bugs:\n" + "\n".join(map(repr, bugs))
    finally:
        await harness.close()
