"""Server settings: flags over environment over defaults (``condpay serve --help`` lists them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from settlement.metrics import parse_addr

DEFAULT_ADDR = "127.0.0.1:50051"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Settings:
    addr: str = DEFAULT_ADDR
    # Empty: embedded SQLite at ./var/condpay.db.
    database_url: str = ""
    # Plaintext, identity from the condpay-caller metadata: development only.
    insecure: bool = False
    # Mutual TLS: server.pem, server.key and ca.pem made by `condpay certs init`.
    certs_dir: str = "var/certs"
    log_level: str = "info"
    # One JSON line per call (method, caller, request id, status, latency).
    log_calls: bool = True
    # Writer connections on PostgreSQL: batches in flight at once (SQLite always has one). One
    # measured fastest on 2 cores: while a batch is in flight the next one fills up.
    writers: int = 1
    # PostgreSQL isolation for write transactions: read_committed (row locks) or serializable.
    pg_isolation: str = "read_committed"
    # Server processes sharing the address (SO_REUSEPORT), each a stateless replica; 0 is "auto":
    # one per CPU on PostgreSQL, one on SQLite (one writer at a time there anyway).
    workers: int = 0
    # Threads that verify BLS aggregates beside the event loop (blspy releases the GIL); None is
    # "auto": the CPUs the server processes leave spare (1 worker on 2 CPUs: 1), 0 verifies on
    # the loop (a thread only adds hand-offs when every CPU runs a worker already).
    verify_threads: int | None = None
    # Set in each worker of a group: bind with SO_REUSEPORT.
    reuse_port: bool = False
    # The multi-CBDC bridge for PvP and cross-currency DvP: auto (in process, state beside the
    # database, with one worker; none with more), none, memory, sqlite:///PATH, grpc://HOST:PORT.
    bridge: str = "auto"
    # The institution that is the core's participant on the bridge; its reserve wallet is the
    # gateway through which cross-currency legs pass.
    bridge_gateway: str = "CONDPAY"
    # PvP timing (docs/settlement.md): the core holds a settlement's legs for hold_ms before it
    # must decide; the bridge's reservation ends margin_ms before that.
    pvp_hold_ms: int = 30_000
    pvp_margin_ms: int = 5_000
    # How far ahead a signed document's expires_at_us may be (INSTRUCTION_EXPIRY_TOO_FAR beyond).
    instruction_ttl_max_seconds: int = 86_400
    # Quotas (docs/api.md "Quotas"), each refused with RESOURCE_EXHAUSTED naming the limit and
    # this setting. Calls one caller may have in flight in one server process (streams included).
    calls_in_flight_max: int = 512
    # WatchPayment streams one caller may hold open in one server process.
    streams_max: int = 64
    # Contracts one caller may register per UTC day (RegisterContract, and LockPayment with a new
    # source), counted in the database, so across replicas.
    contracts_per_day_max: int = 1000
    # CPU-heavy calls (ValidateContract, SimulateContract, contract compiles) one caller may have
    # in flight in one server process; they run in a process pool, off the event loop.
    heavy_calls_max: int = 2
    # Failed outcomes are kept this long, then swept: until then a failed request id keeps
    # failing the same way; afterwards it may be used again.
    failed_outcome_retention_seconds: int = 86_400
    # A grpc:// bridge (docs/bridge.md): mutual TLS with the gateway's bridge identity from this
    # directory (ca.pem, participants/bank_<gateway>.pem/.key); "" is <certs_dir>/bridge.
    bridge_certs_dir: str = ""
    # Plaintext to a bridge in its --insecure development mode (the gateway's identity as
    # metadata). Development only.
    bridge_insecure: bool = False
    # The bridge's validator set, pinned: the JSON file `bridge serve --export-validators` writes.
    bridge_validators: str = ""
    # gRPC server reflection: on by default in the insecure mode only; 1 turns it on under TLS.
    reflection: bool | None = None
    # Prometheus /metrics on HOST:PORT (settlement/metrics.py); empty: no metrics.
    metrics_addr: str = ""

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        is_sqlite = not self.database_url or self.database_url.startswith("sqlite")
        return 1 if is_sqlite else max(1, os.cpu_count() or 1)

    def verify_thread_count(self) -> int:
        if self.verify_threads is not None:
            return self.verify_threads
        return max(0, (os.cpu_count() or 1) - self.worker_count())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            addr=env.get("CONDPAY_ADDR", DEFAULT_ADDR),
            database_url=env.get("CONDPAY_DATABASE_URL", ""),
            insecure=_flag(env.get("CONDPAY_INSECURE")),
            certs_dir=env.get("CONDPAY_CERTS_DIR", "var/certs"),
            log_level=env.get("CONDPAY_LOG_LEVEL", "info"),
            log_calls=not _flag(env.get("CONDPAY_QUIET_CALLS")),
            writers=int(env.get("CONDPAY_WRITERS", "1")),
            pg_isolation=env.get("CONDPAY_PG_ISOLATION", "read_committed"),
            workers=parse_workers(env.get("CONDPAY_WORKERS", "auto")),
            reuse_port=_flag(env.get("CONDPAY_REUSE_PORT")),
            verify_threads=parse_verify_threads(env.get("CONDPAY_VERIFY_THREADS", "auto")),
            bridge=env.get("CONDPAY_BRIDGE", "auto"),
            bridge_gateway=env.get("CONDPAY_BRIDGE_GATEWAY", "CONDPAY"),
            pvp_hold_ms=int(env.get("CONDPAY_PVP_HOLD_MS", "30000")),
            pvp_margin_ms=int(env.get("CONDPAY_PVP_MARGIN_MS", "5000")),
            instruction_ttl_max_seconds=int(
                env.get("CONDPAY_INSTRUCTION_TTL_MAX_SECONDS", "86400")
            ),
            calls_in_flight_max=_positive(env, "CONDPAY_CALLS_IN_FLIGHT_MAX", 512),
            streams_max=_positive(env, "CONDPAY_STREAMS_MAX", 64),
            contracts_per_day_max=_positive(env, "CONDPAY_CONTRACTS_PER_DAY_MAX", 1000),
            heavy_calls_max=_positive(env, "CONDPAY_HEAVY_CALLS_MAX", 2),
            failed_outcome_retention_seconds=_positive(
                env, "CONDPAY_FAILED_OUTCOME_RETENTION_SECONDS", 86_400
            ),
            bridge_certs_dir=env.get("CONDPAY_BRIDGE_CERTS_DIR", ""),
            bridge_insecure=_flag(env.get("CONDPAY_BRIDGE_INSECURE")),
            bridge_validators=env.get("CONDPAY_BRIDGE_VALIDATORS", ""),
            reflection=(
                _flag(env.get("CONDPAY_REFLECTION")) if env.get("CONDPAY_REFLECTION") else None
            ),
            metrics_addr=env.get("CONDPAY_METRICS_ADDR", "").strip(),
        )
        if settings.metrics_addr:
            parse_addr(settings.metrics_addr)  # ValueError for anything but HOST:PORT
        if settings.instruction_ttl_max_seconds <= 0:
            raise ValueError("CONDPAY_INSTRUCTION_TTL_MAX_SECONDS must be a positive number")
        check_pvp_timing(settings.pvp_hold_ms, settings.pvp_margin_ms)
        return settings


def check_pvp_timing(hold_ms: int, margin_ms: int) -> None:
    """Refuse timings under which no settlement could ever commit. The coordinator reserves the
    bridge's leg for ``(decide_by - now) - margin_ms`` and only while that is more than
    ``margin_ms``; right after the hold ``decide_by - now`` is ``hold_ms``, so it needs
    ``hold_ms - margin_ms > margin_ms``, i.e. ``hold_ms > 2 * margin_ms``. Otherwise every
    settlement is aborted with DECISION_DEADLINE before the bridge is asked."""
    if margin_ms < 0:
        raise ValueError(f"CONDPAY_PVP_MARGIN_MS must not be negative (it is {margin_ms})")
    if hold_ms <= 2 * margin_ms:
        raise ValueError(
            f"CONDPAY_PVP_HOLD_MS ({hold_ms}) must be more than twice CONDPAY_PVP_MARGIN_MS "
            f"({margin_ms}): the bridge's reservation lasts CONDPAY_PVP_HOLD_MS - "
            "CONDPAY_PVP_MARGIN_MS and is made only while that is more than "
            "CONDPAY_PVP_MARGIN_MS, so with these values every settlement would abort "
            f"(DECISION_DEADLINE); raise CONDPAY_PVP_HOLD_MS above {2 * margin_ms} or lower "
            "CONDPAY_PVP_MARGIN_MS"
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    """A quota setting: a positive whole number."""
    text = env.get(name, "").strip()
    if not text:
        return default
    value = int(text)
    if value < 1:
        raise ValueError(f"{name} must be a positive number (it is {value})")
    return value


def parse_verify_threads(text: str) -> int | None:
    """ "auto" (or empty) is None; otherwise a number, 0 or more."""
    if text.strip().lower() in {"", "auto"}:
        return None
    count = int(text)
    if count < 0:
        raise ValueError("CONDPAY_VERIFY_THREADS must be 0 or more, or auto")
    return count


def parse_workers(text: str) -> int:
    """ "auto" (or empty) is 0; otherwise a positive number."""
    if text.strip().lower() in {"", "auto"}:
        return 0
    count = int(text)
    if count < 1:
        raise ValueError("workers must be a positive number or auto")
    return count


ENVIRONMENT_HELP = """environment:
  CONDPAY_ADDR           listen address (default 127.0.0.1:50051)
  CONDPAY_DATABASE_URL   postgresql://user:pass@host:port/db, or sqlite:///path
                         (default: embedded SQLite at ./var/condpay.db)
  CONDPAY_CERTS_DIR      mutual TLS files from `condpay certs init` (default var/certs)
  CONDPAY_INSECURE=1     plaintext development mode (identity from condpay-caller metadata)
  CONDPAY_LOG_LEVEL      debug | info | warning | error (default info)
  CONDPAY_QUIET_CALLS=1  no per-call log line
  CONDPAY_WRITERS        PostgreSQL writer connections, batches in flight (default 1)
  CONDPAY_PG_ISOLATION   read_committed (default) | serializable
  CONDPAY_WORKERS        server processes sharing the address: a number, or auto (default:
                         one per CPU on PostgreSQL, one on SQLite)
  CONDPAY_VERIFY_THREADS threads verifying BLS aggregates beside the event loop: a number
                         (0: on the loop), or auto (default: the CPUs the workers leave spare)
  CONDPAY_EVENT_LOOP     uvloop (default, when installed) | asyncio
  CONDPAY_BRIDGE         the multi-CBDC bridge: auto (default: in process beside the database
                         with one worker, none with more), none, memory, sqlite:///PATH,
                         grpc://HOST:PORT (a `condpay bridge serve`)
  CONDPAY_BRIDGE_GATEWAY the core's participant on the bridge, an institution id (CONDPAY)
  CONDPAY_BRIDGE_VALIDATORS  a grpc:// bridge's validator set, pinned (the JSON file
                         `condpay bridge serve --export-validators PATH` writes); required
  CONDPAY_BRIDGE_CERTS_DIR   the gateway's bridge identity for mutual TLS to a grpc:// bridge
                         (default <CONDPAY_CERTS_DIR>/bridge: ca.pem, participants/bank_<gw>.*)
  CONDPAY_BRIDGE_INSECURE=1  plaintext to a bridge in its --insecure development mode
  CONDPAY_METRICS_ADDR   Prometheus /metrics on HOST:PORT (default: off); with --workers N the
                         parent serves the workers' series summed (docs/operations.md)
  CONDPAY_REFLECTION     server reflection: default on with CONDPAY_INSECURE=1, off under TLS;
                         1 turns it on under TLS, 0 off
  CONDPAY_PVP_HOLD_MS    how long a settlement's legs are held before it must be decided (30000)
  CONDPAY_PVP_MARGIN_MS  the bridge's reservation ends this much earlier (5000); the hold
                         must be more than twice the margin
  CONDPAY_INSTRUCTION_TTL_MAX_SECONDS
                         how far ahead a signed document may expire (86400); a later
                         expires_at_us is refused (INSTRUCTION_EXPIRY_TOO_FAR)
quotas (RESOURCE_EXHAUSTED with the limit and the setting in the ErrorInfo metadata):
  CONDPAY_CALLS_IN_FLIGHT_MAX  calls one caller may have in flight per server process,
                         streams included (512)
  CONDPAY_STREAMS_MAX    WatchPayment streams one caller may hold open per process (64)
  CONDPAY_CONTRACTS_PER_DAY_MAX  contracts one caller may register per UTC day, across
                         replicas (1000)
  CONDPAY_HEAVY_CALLS_MAX  ValidateContract, SimulateContract and contract compiles one caller
                         may have in flight per process (2)
  CONDPAY_FAILED_OUTCOME_RETENTION_SECONDS  how long a failed request's outcome is kept: until
                         then its request id keeps failing the same way (86400)
"""
