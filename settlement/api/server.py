"""The gRPC server: services wrapped by the call wrapper, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from condpay.v1 import (
    asset_pb2,
    asset_pb2_grpc,
    central_bank_pb2,
    central_bank_pb2_grpc,
    contract_pb2,
    contract_pb2_grpc,
    evidence_pb2,
    evidence_pb2_grpc,
    finance_pb2,
    finance_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
    oracle_pb2,
    oracle_pb2_grpc,
    payment_pb2,
    payment_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bridges import StateFileBusy
from settlement import limits, tracing
from settlement.api.asset_service import AssetService
from settlement.api.calls import CallWrapper
from settlement.api.central_bank_service import CentralBankService
from settlement.api.contract_service import ContractService
from settlement.api.evidence_service import EvidenceService
from settlement.api.finance_service import InventoryFinanceService
from settlement.api.operation_service import OperationService
from settlement.api.oracle_service import OracleService
from settlement.api.payment_service import PaymentService
from settlement.api.settlement_service import SettlementService
from settlement.api.tls import identity_resolver, server_credentials
from settlement.api.wallet_service import WalletService
from settlement.config import Settings
from settlement.db.availability import PrimaryWatch
from settlement.metrics import MULTIPROCESS_ENV, serve_metrics
from settlement.runtime import Runtime

log = structlog.get_logger("condpay.server")

SERVICE_NAMES = (
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    central_bank_pb2.DESCRIPTOR.services_by_name["CentralBankService"].full_name,
    operation_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name,
    contract_pb2.DESCRIPTOR.services_by_name["ContractService"].full_name,
    payment_pb2.DESCRIPTOR.services_by_name["ConditionalPaymentService"].full_name,
    oracle_pb2.DESCRIPTOR.services_by_name["OracleService"].full_name,
    asset_pb2.DESCRIPTOR.services_by_name["AssetService"].full_name,
    settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name,
    evidence_pb2.DESCRIPTOR.services_by_name["EvidenceService"].full_name,
    finance_pb2.DESCRIPTOR.services_by_name["InventoryFinanceService"].full_name,
)


@dataclass(slots=True)
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    runtime: Runtime
    # PostgreSQL: health follows the primary (NOT_SERVING while none answers read-write).
    primary_watch: PrimaryWatch | None = None

    async def stop(self, grace_seconds: float = limits.SHUTDOWN_GRACE_SECONDS) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish, close the ledger."""
        if self.primary_watch is not None:
            await self.primary_watch.stop()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_seconds)
        await self.runtime.close()


async def start_server(runtime: Runtime, addr: str) -> RunningServer:
    """Serve ``runtime`` (already started) on ``addr``; port 0 picks a free port."""
    settings = runtime.settings
    tls_files = require_certificates(settings)
    if tls_files is None:
        log.warning(
            "insecure_mode",
            message="PLAINTEXT DEVELOPMENT MODE: no TLS, caller identity taken from the "
            "condpay-caller metadata. Never expose this server beyond localhost.",
        )
    server = grpc.aio.server(
        options=[
            # Several worker processes share one port only when asked (condpay serve --workers N).
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            # A larger request is refused by gRPC (RESOURCE_EXHAUSTED) before it is decoded.
            ("grpc.max_receive_message_length", limits.REQUEST_BYTES_MAX),
        ],
    )
    calls = CallWrapper(
        server,
        identity=identity_resolver(insecure=tls_files is None),
        log_calls=settings.log_calls,
        quotas=runtime.quotas,
        metrics=runtime.metrics,
    )
    calls.register(wallet_pb2_grpc.add_WalletServiceServicer_to_server, WalletService(runtime))
    calls.register(
        central_bank_pb2_grpc.add_CentralBankServiceServicer_to_server, CentralBankService(runtime)
    )
    calls.register(
        operation_pb2_grpc.add_OperationServiceServicer_to_server, OperationService(runtime)
    )
    calls.register(
        contract_pb2_grpc.add_ContractServiceServicer_to_server, ContractService(runtime)
    )
    calls.register(
        payment_pb2_grpc.add_ConditionalPaymentServiceServicer_to_server, PaymentService(runtime)
    )
    calls.register(oracle_pb2_grpc.add_OracleServiceServicer_to_server, OracleService(runtime))
    calls.register(asset_pb2_grpc.add_AssetServiceServicer_to_server, AssetService(runtime))
    settlement_service = SettlementService(runtime)
    calls.register(
        finance_pb2_grpc.add_InventoryFinanceServiceServicer_to_server,
        InventoryFinanceService(runtime, settlement_service),
    )
    calls.register(
        evidence_pb2_grpc.add_EvidenceServiceServicer_to_server, EvidenceService(runtime)
    )
    calls.register(settlement_pb2_grpc.add_SettlementServiceServicer_to_server, settlement_service)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection lists every service and message to whoever connects: on by default in the
    # development mode only; under mutual TLS only when asked (CONDPAY_REFLECTION=1).
    if settings.reflection if settings.reflection is not None else tls_files is None:
        from grpc_reflection.v1alpha import reflection  # loaded only when reflection is on

        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    if tls_files is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, server_credentials(*tls_files))
    await server.start()
    await _set_health(health_servicer, serving=True)
    watch = None
    if runtime.url.dialect == "postgresql":

        async def follow(writable: bool) -> None:
            await _set_health(health_servicer, serving=writable)

        watch = PrimaryWatch(runtime.url.asyncpg_dsn or "", follow)
        watch.start()
    log.info(
        "serving",
        addr=addr,
        port=port,
        database=runtime.url.redacted(),
        transport="plaintext" if tls_files is None else "mutual TLS",
    )
    return RunningServer(server, port, health_servicer, runtime, watch)


async def _set_health(servicer: health.aio.HealthServicer, *, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await servicer.set(name, status)


def require_certificates(settings: Settings) -> tuple[Path, Path, Path] | None:
    """The server's TLS files, or None in the explicit plaintext development mode; without
    either the server refuses to start."""
    if settings.insecure:
        return None
    root = Path(settings.certs_dir)
    if (root / "ca.key").exists():
        raise SystemExit(
            f"condpay serve: {root / 'ca.key'} is the CA's private key, in the directory the "
            "server reads: whoever reads the server's files could mint any identity. Move it "
            "out (`condpay certs init` keeps it in --ca-dir, var/ca) and start again"
        )
    files = (root / "server.pem", root / "server.key", root / "ca.pem")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise SystemExit(
            f"condpay serve: mutual TLS needs {', '.join(missing)}: run `condpay certs init` "
            "(or start the plaintext development mode explicitly with --insecure / "
            "CONDPAY_INSECURE=1)"
        )
    return files


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    require_certificates(settings)  # before touching the database
    try:
        tracing.configure(settings.otel)
    except ValueError as bad:
        print(f"condpay serve: {bad}", file=sys.stderr)
        raise SystemExit(2) from None
    runtime = Runtime(settings)
    try:
        await runtime.start()
    except StateFileBusy as busy:
        await runtime.close()
        print(f"condpay serve: {busy}", file=sys.stderr)
        raise SystemExit(2) from None
    metrics_http = None
    try:
        # A worker of `--workers N` leaves /metrics to its parent (settlement/metrics.py).
        if settings.metrics_addr and not os.environ.get(MULTIPROCESS_ENV):
            try:
                metrics_http, _ = serve_metrics(settings.metrics_addr)
            except OSError as taken:
                print(
                    f"condpay serve: --metrics-addr {settings.metrics_addr}: {taken}",
                    file=sys.stderr,
                )
                raise SystemExit(2) from None
        running = await start_server(runtime, settings.addr)
    except BaseException:
        if metrics_http is not None:
            metrics_http.shutdown()
        await runtime.close()
        raise
    # py-ecc raises the recursion limit to 100,000 on import (wallets/bls.py imports it only when
    # needed, and puts the limit back): keep Python's own, so that hostile deep input raises
    # RecursionError instead of overflowing the C stack.
    sys.setrecursionlimit(1000)
    # Everything loaded so far lives as long as the process: keep the collector off it (and run
    # it at Python's own pace: larger thresholds made each young collection a long pause).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*limits.GC_THRESHOLDS)
    gc.enable()  # `condpay serve` starts with it off (settlement/cli.py)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting_down", grace_seconds=limits.SHUTDOWN_GRACE_SECONDS)
    await running.stop()
    if metrics_http is not None:
        metrics_http.shutdown()
    log.info("stopped")
