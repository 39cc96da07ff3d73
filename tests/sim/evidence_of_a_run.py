"""After a simulator run: one payment of each outcome, exported with `condpay evidence export`
from a server over the run's database and checked with `condpay evidence verify` against the
server's published checkpoint key (issue 15's acceptance on the smoke scenario)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from condpay.client import Client
from condpay.v1 import evidence_pb2, payment_pb2

from sim_central_bank.server_process import ServerProcess

AUDITOR = "auditor/evidence"
_STATE = payment_pb2.PaymentState


def _outcome(payment: payment_pb2.Payment) -> str:
    if payment.state == _STATE.PAYMENT_STATE_EXPIRED:
        return "refunded at the deadline"
    if payment.state == _STATE.PAYMENT_STATE_PARTIALLY_RELEASED:
        return "partially released"
    if payment.state == _STATE.PAYMENT_STATE_SETTLED:
        bridged = any(leg.paid_to_wallet_id.startswith("s_") for leg in payment.legs)
        return "paid out through the bridge" if bridged else "settled"
    return _STATE.Name(payment.state)


def _condpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", "evidence", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def export_and_verify_each_outcome(database_url: str, directory: Path) -> dict[str, str]:
    """{outcome: the verifier's summary} for one payment of each outcome of the run."""
    core = ServerProcess(
        database_url,
        log_path=directory / "evidence-core.log",
        extra_env={"CONDPAY_BRIDGE": "none"},  # the run is over: nothing left to settle
    )
    core.start()
    try:
        await core.wait_ready()
        async with Client(core.address, caller=AUDITOR) as auditor:
            key = await auditor.api.evidence.get_checkpoint_key(
                evidence_pb2.GetCheckpointKeyRequest()
            )
            listed = await auditor.api.payments.list_payments(
                payment_pb2.ListPaymentsRequest(page_size=500)
            )
        chosen: dict[str, str] = {}
        for payment in listed.payments:
            chosen.setdefault(_outcome(payment), payment.payment_id)
        summaries: dict[str, str] = {}
        for outcome, payment_id in sorted(chosen.items()):
            bundle = directory / f"{payment_id}.evidence.json"
            exported = _condpay(
                "export", payment_id, "--server", core.address, "--caller", AUDITOR,
                "--insecure", "-o", str(bundle),
            )  # fmt: skip
            assert exported.returncode == 0, (outcome, exported.stderr)
            verified = _condpay("verify", str(bundle), "--checkpoint-key", key.public_key.hex())
            assert verified.returncode == 0, (outcome, verified.stdout, verified.stderr)
            summaries[outcome] = verified.stdout
        return summaries
    finally:
        core.stop()
