"""The composition root: database, migrations, the ledger store and engine, readers and caches."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from settlement import limits
from settlement.api.quotas import CallQuotas, HeavyWork
from settlement.api.scopes import PageTokens
from settlement.api.status import StatusCodec
from settlement.api.verify_threads import VerifyThreads
from settlement.certs import CHECKPOINT_KEY_FILE, load_or_create_checkpoint_key
from settlement.clock import Clock, SystemClock
from settlement.config import Settings
from settlement.coordination import shared_verdicts
from settlement.coordination.bridge_link import BridgeLink, LinkSecurity, open_bridge
from settlement.coordination.coordinator import Coordinator, Timing
from settlement.coordination.payouts import PayoutStarter
from settlement.coordination.recovery import RecoverySweeper
from settlement.db.migrate import upgrade_to_head
from settlement.db.server_keys import shared_secret
from settlement.db.urls import DatabaseUrl, parse_database_url
from settlement.faults import Faults
from settlement.ledger.checkpoints import Checkpoints
from settlement.ledger.commands import reserve_wallet_id
from settlement.ledger.deadline_reads import DeadlineReader
from settlement.ledger.deadlines import DeadlineSweeper
from settlement.ledger.directory import Directory
from settlement.ledger.engine import LedgerEngine
from settlement.ledger.loan_reads import LoanReader
from settlement.ledger.notifier import PaymentNotifier
from settlement.ledger.oracle_sets import OracleSets
from settlement.ledger.read_sessions import begin_each_sqlite_transaction, read_sessions
from settlement.ledger.reads import LedgerReader
from settlement.ledger.retention import OutcomeRetention
from settlement.ledger.settlement_reads import SettlementReader
from settlement.ledger.store import LedgerStore
from settlement.ledger.store_sqlite import SqliteStore
from settlement.metrics import Metrics, Sources, pools_of, process_metrics

log = structlog.get_logger("condpay.runtime")


def create_sql_engine(url: DatabaseUrl) -> AsyncEngine:
    """The async engine of migrations and whole-ledger reads (the readers' sessions: see
    :mod:`settlement.ledger.read_sessions`). On SQLite every transaction starts with an explicit
    BEGIN, so a read sees one snapshot; on PostgreSQL see :func:`snapshot_reads`."""
    # Several hosts: a replicated cluster whose primary may change under a pooled connection, so
    # each checkout is pinged (and a dead one replaced, on the new primary) before a read uses it.
    engine = create_async_engine(
        url.sqlalchemy,
        pool_size=limits.READ_POOL_SIZE,
        max_overflow=0,
        pool_pre_ping=url.multi_host,
    )
    if url.dialect == "sqlite":
        begin_each_sqlite_transaction(engine.sync_engine)
    return engine


def snapshot_reads(engine: AsyncEngine) -> AsyncEngine:
    """The readers' view of ``engine``: each read session one transaction over one snapshot, so a
    payment read while a release commits is all before or all after it, never its row from one
    side and its legs from the other. PostgreSQL takes a snapshot per statement under READ
    COMMITTED, per transaction under REPEATABLE READ. (Migrations keep READ COMMITTED: they wait
    for a lock and must then see what the replica that held it created.)"""
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="REPEATABLE READ")


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.url = parse_database_url(settings.database_url)
        self.sql: AsyncEngine = create_sql_engine(self.url)
        self.store: LedgerStore
        if self.url.dialect == "sqlite":
            self.store = SqliteStore(self.url.sqlite_path or "")
        else:
            # asyncpg is loaded only for PostgreSQL.
            from settlement.ledger.store_postgres import PostgresStore

            self.store = PostgresStore(
                self.url.asyncpg_dsn or "", settings.writers, isolation=settings.pg_isolation
            )
        self.read_sessions = read_sessions(snapshot_reads(self.sql), self.url)
        self.reader = LedgerReader(self.read_sessions)
        self.directory = Directory(self.reader)
        self.oracle_sets = OracleSets(self.reader)
        self.notifier = PaymentNotifier()
        self.faults = Faults.from_env()
        self.engine = LedgerEngine(
            self.store, self.clock, StatusCodec(), self.directory, self.notifier, self.faults
        )
        self.loans = LoanReader(self.read_sessions)
        self.deadlines = DeadlineSweeper(
            DeadlineReader(self.read_sessions), self.engine, self.clock, self.faults
        )
        self.settlements = SettlementReader(self.read_sessions)
        # Per-caller calls in flight and streams (the call wrapper takes and gives back slots).
        self.quotas = CallQuotas.from_settings(settings)
        # CPU-heavy contract work, off the event loop (pool started on first use).
        self.heavy = HeavyWork(settings.heavy_calls_max)
        # BLS aggregates verified beside the loop (blspy releases the GIL) when a CPU is spare.
        self.verify_threads = VerifyThreads(settings.verify_thread_count())
        self.retention = OutcomeRetention(
            self.sql, self.clock, settings.failed_outcome_retention_seconds
        )
        self.page_tokens = PageTokens()  # its key is read (or made) in start
        # Signed journal checkpoints; their key is read (or made) in start.
        self._checkpoints: Checkpoints | None = None
        # Prometheus series (settlement/metrics.py), when CONDPAY_METRICS_ADDR is set.
        self.metrics: Metrics | None = process_metrics() if settings.metrics_addr else None
        self._sampler: asyncio.Task[None] | None = None
        # With a bridge (opened in start): PvP, cross-currency DvP and payouts.
        self.bridge: BridgeLink | None = None
        self.coordinator: Coordinator | None = None
        self.recovery: RecoverySweeper | None = None
        self.payouts: PayoutStarter | None = None

    async def start(self) -> None:
        if self.url.sqlite_path:
            Path(self.url.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        await upgrade_to_head(self.sql)
        await self.page_tokens.load(self.sql, self.clock.now_us())
        self._checkpoints = Checkpoints(
            self.sql,
            self.clock,
            await self._checkpoint_key(),
            self.settings.checkpoint_every_entries,
            self.settings.checkpoint_every_seconds,
        )
        await self.store.start()
        await self.engine.start()
        # The bridge first: it may refuse (its state file held by another process) before any
        # sweep has started, so no sweep's read is cut off mid-way by the exit that follows.
        await self._open_bridge()
        self.deadlines.start()
        self.retention.start()
        self._checkpoints.start()
        if self.metrics is not None:
            self._watch(self.metrics)

    @property
    def checkpoints(self) -> Checkpoints:
        assert self._checkpoints is not None, "Runtime.start was not awaited"
        return self._checkpoints

    async def _checkpoint_key(self) -> Ed25519PrivateKey:
        """The key that signs journal checkpoints: the file of the checkpoint_key setting, else
        CERTS_DIR/checkpoint.key (made when missing); in the plaintext development mode without
        the setting, one kept in the database so that every replica and restart signs alike."""
        settings = self.settings
        if settings.insecure and not settings.checkpoint_key:
            seed = await shared_secret(
                self.sql, "checkpoint-ed25519-seed", lambda: os.urandom(32), self.clock.now_us()
            )
            return Ed25519PrivateKey.from_private_bytes(seed)
        path = Path(settings.checkpoint_key or Path(settings.certs_dir) / CHECKPOINT_KEY_FILE)
        try:
            key, created = load_or_create_checkpoint_key(path)
        except (OSError, ValueError) as bad:
            raise SystemExit(f"condpay serve: checkpoint key {path}: {bad}") from None
        if created:
            log.warning("checkpoint_key_created", path=str(path), why="no key was there yet")
        return key

    def _watch(self, metrics: Metrics) -> None:
        self.engine.on_batch = metrics.batch
        engines = self.read_sessions.sync_engines
        named = [
            ("reads", engines[-1]),
            *([("reads_loop", engines[0])] if len(engines) > 1 else []),
        ]
        bridge = self.bridge
        sources = Sources(
            sql=self.sql,
            pools=pools_of(named),
            stuck_settlements=lambda: self.stuck_settlements,
            bridge_link_up=lambda: None if bridge is None else bridge.answered is not False,
        )
        self._sampler = asyncio.create_task(metrics.sample_forever(sources), name="metrics")

    async def _open_bridge(self) -> None:
        spec = self.settings.bridge
        # A worker of `condpay serve --workers N` is told CONDPAY_WORKERS=1 and gets
        # CONDPAY_BRIDGE=none from its parent instead (settlement/api/workers.py); this is for a
        # runtime built with several workers' settings directly.
        if spec == "auto" and self.settings.worker_count() > 1:
            log.warning(
                "bridge_disabled",
                why="an in-process bridge serves one process; set CONDPAY_BRIDGE=grpc://...",
            )
            spec = "none"
        beside = Path(self.url.sqlite_path or "var/condpay.db").with_name("bridge.db")
        self.bridge = await open_bridge(
            spec,
            self.settings.bridge_gateway,
            beside,
            self.clock,
            self._link_security(),
            shared_verdicts.inherited(),  # the other workers' (settlement/api/workers.py)
        )
        if self.bridge is None:
            return
        self.coordinator = Coordinator(
            self.engine,
            self.settlements,
            self.bridge,
            reserve_wallet_id(self.settings.bridge_gateway),
            self.clock,
            self.faults,
            Timing(self.settings.pvp_hold_ms, self.settings.pvp_margin_ms),
        )
        self.recovery = RecoverySweeper(self.settlements, self.coordinator, self.clock)
        self.recovery.start()
        self.payouts = PayoutStarter(self.coordinator)
        self.engine.on_payouts_created(self.payouts.start)

    def _link_security(self) -> LinkSecurity:
        settings = self.settings
        return LinkSecurity(
            certs_dir=Path(settings.bridge_certs_dir or Path(settings.certs_dir) / "bridge"),
            insecure=settings.bridge_insecure,
            validators=Path(settings.bridge_validators) if settings.bridge_validators else None,
        )

    @property
    def stuck_settlements(self) -> int:
        """Settlements the coordinator left for an operator: the bridge reported a state the
        decision log cannot reconcile (docs/settlement.md, recovery). 0 without a bridge."""
        return 0 if self.coordinator is None else self.coordinator.stuck_count

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.recovery is not None:
            await self.recovery.stop()
        if self.payouts is not None:
            await self.payouts.stop()
        if self.bridge is not None:
            await self.bridge.close()
        await self.deadlines.stop()
        await self.retention.stop()
        if self._checkpoints is not None:
            await self._checkpoints.stop()
        await self.engine.close()
        await self.heavy.close()
        await self.verify_threads.close()
        await self.store.close()
        self.read_sessions.close()
        await self.sql.dispose()
