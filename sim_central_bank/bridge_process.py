"""Start, kill and restart the multi-CBDC bridge as a child process (``python -m bridges serve``),
the way an operator runs it beside the core: a fixed address (the core's ``CONDPAY_BRIDGE`` points
at it across restarts) and a durable SQLite state file, bootstrapped with the demo banks, the
liquidity provider and the core's gateway bank; one log file per start.

The bootstrap (``--bootstrap``) runs at the first start only, by default: it publishes the demo
rates, so running it again at a restart would replace whatever rates were published since (the
state file keeps them, and the banks, across restarts). ``bootstrap_every_start=True`` runs it at
every start (it is idempotent: fixed request ids), for a caller that wants the demo rates back
after each restart.

Participants are identities (docs/bridge.md): the bridge runs in its development mode
(``--insecure``), each caller naming itself in the ``condpay-bridge-participant`` metadata (the core
as ``bank/<gateway>``, the simulator's rates from each currency's central bank, its auditor as
``auditor/sim-auditor``), and exports its validator set at every start for the core to pin
(:meth:`core_env`). With ``tls_dir`` (the ``bridge/`` folder ``condpay certs init`` makes) it serves
mutual TLS instead, each caller presenting its participant certificate, and the core links with
the gateway's (:meth:`client` dials either way)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bridges import BridgeClient, ClientTls, Identity
from sim_central_bank.record import GATEWAY
from sim_central_bank.server_process import free_port


class BridgeProcess:
    def __init__(
        self,
        state: Path,
        log_dir: Path,
        *,
        gateway: str = GATEWAY,
        block_interval_ms: int = 50,
        bootstrap_every_start: bool = False,
        tls_dir: Path | None = None,
    ) -> None:
        self.state = state
        self.log_dir = log_dir
        self.gateway = gateway
        self.block_interval_ms = block_interval_ms
        self.bootstrap_every_start = bootstrap_every_start
        self.tls_dir = tls_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = log_dir / "bridge-0.log"
        self.validators_path = log_dir.parent / "bridge-validators.json"

    def core_env(self) -> dict[str, str]:
        """What the core needs to reach this bridge: its address, the link (mutual TLS with the
        gateway's certificate, or the development mode's metadata identity) and the validator
        set to pin. Paths are absolute: the core runs in its log's directory
        (server_process.ServerProcess), where a relative one names nothing."""
        link = (
            {"CONDPAY_BRIDGE_INSECURE": "1"}
            if self.tls_dir is None
            else {"CONDPAY_BRIDGE_CERTS_DIR": str(self.tls_dir.absolute())}
        )
        return {
            "CONDPAY_BRIDGE": f"grpc://{self.address}",
            **link,
            "CONDPAY_BRIDGE_VALIDATORS": str(self.validators_path.absolute()),
        }

    def client(self, identity: Identity, *, deadline_ms: int = 10_000) -> BridgeClient:
        """A client of this bridge calling as ``identity`` (its certificate under TLS)."""
        if self.tls_dir is None:
            return BridgeClient(self.address, identity=identity, deadline_ms=deadline_ms)
        return BridgeClient(
            self.address,
            tls=ClientTls.for_participant(self.tls_dir, identity),
            deadline_ms=deadline_ms,
        )

    async def start(self, faults: Sequence[str] = (), *, seed: int = 0) -> None:
        """Start it with these fault specs and seed; returns once it prints its ready line."""
        self._spawn(faults, seed)
        give_up = time.monotonic() + 30
        while "serving on" not in self._log_path.read_text(errors="replace"):
            if self.exit_status() is not None:
                raise RuntimeError(f"the bridge exited; see {self._log_path}")
            if time.monotonic() > give_up:
                raise TimeoutError(f"the bridge did not start; see {self._log_path}")
            await asyncio.sleep(0.02)

    def _spawn(self, faults: Sequence[str], seed: int) -> None:
        assert self.exit_status() is not None or self._process is None, "still running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.log_dir / f"bridge-{self.starts}.log"
        bootstrap = (
            ["--bootstrap", "--bank", f"{self.gateway}=condpay settlement core gateway"]
            if self.starts == 0 or self.bootstrap_every_start
            else []
        )
        self.starts += 1
        args = [a for spec in faults for a in ("--fault", spec)]
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridges",
                    "serve",
                    "--addr",
                    self.address,
                    "--state",
                    str(self.state),
                    "--block-interval-ms",
                    str(self.block_interval_ms),
                    *(["--insecure"] if self.tls_dir is None else ["--tls-dir", str(self.tls_dir)]),
                    "--export-validators",
                    str(self.validators_path),
                    *bootstrap,
                    "--fault-seed",
                    str(seed),
                    *args,
                ],
                stdout=log,
                stderr=log,
                env={k: v for k, v in os.environ.items() if not k.startswith("CONDPAY_BRIDGE")},
            )

    def exit_status(self) -> int | None:
        process = self._process
        return None if process is None else process.poll()

    async def stop(self, *, kill: bool = False) -> int:
        """SIGKILL (a crash) or SIGTERM (graceful); returns the exit status."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        give_up = time.monotonic() + 15
        while process.poll() is None:
            if time.monotonic() > give_up:
                process.kill()
            await asyncio.sleep(0.02)
        return process.returncode

    def crashes(self) -> Counter[str]:
        """Which crash faults killed an incarnation, from what each printed as it died."""
        found: Counter[str] = Counter()
        for log in self.log_dir.glob("bridge-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("condpay bridge: fault "):
                    found[line.removeprefix("condpay bridge: fault ").split(":")[0]] += 1
        return found
