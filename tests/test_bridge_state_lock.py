"""One process at a time on a bridge's state file (issue 12): a second `condpay serve` from the same
directory, or a second `condpay bridge serve` on the same --state, refuses to start with one clear
line and exit status 2, touching nothing; once the holder dies (kill -9 included) the file is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridges import Bridge, StateFileBusy
from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.server_process import ServerProcess

EXIT_TIMEOUT_S = 30


def _second(process: ServerProcess) -> tuple[int, str]:
    """Start ``process``, which must refuse to start: its exit status and what it printed."""
    process.start()
    assert process._process is not None
    status = process._process.wait(EXIT_TIMEOUT_S)
    return status, process.log_path.read_text(errors="replace")


async def test_a_second_server_in_the_same_directory_refuses_the_in_process_bridge(
    tmp_path: Path,
) -> None:
    data = tmp_path / "var"
    first = ServerProcess(f"sqlite:///{data / 'condpay.db'}", log_path=tmp_path / "first.log")
    first.start()
    try:
        await first.wait_ready()
        assert (data / "bridge.db").exists()
        for name, url in (
            ("same-db", f"sqlite:///{data / 'condpay.db'}"),
            ("other-db", f"sqlite:///{data / 'other.db'}"),  # same directory, same bridge.db
        ):
            status, printed = _second(ServerProcess(url, log_path=tmp_path / f"{name}.log"))
            assert status == 2, printed
            lines = [line for line in printed.splitlines() if line.startswith("condpay serve:")]
            assert len(lines) == 1, printed
            assert str(data / "bridge.db") in lines[0]
            assert f"pid {first._process.pid if first._process else ''}" in lines[0]
            assert "condpay bridge serve" in lines[0]
            assert "Traceback" not in printed
        await first.wait_ready(timeout_seconds=5)  # the first one never noticed
    finally:
        first.stop(kill=True)  # a crash: the kernel drops the lock with the process

    after = ServerProcess(f"sqlite:///{data / 'condpay.db'}", log_path=tmp_path / "after.log")
    after.start()
    try:
        await after.wait_ready()
    finally:
        assert after.stop() == 0


async def test_a_second_bridge_serve_on_the_same_state_refuses(tmp_path: Path) -> None:
    state = tmp_path / "bridge.db"
    first = BridgeProcess(state, tmp_path / "first")
    await first.start()
    try:
        second = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "bridges",
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--state",
                str(state),
                "--insecure",
            ],
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT_S,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("condpay bridge: the bridge state ")
        assert "in use by another process" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.exit_status() is None
    finally:
        await first.stop(kill=True)
    reopened = await Bridge.open(state)  # free again
    await reopened.close()


async def test_one_process_may_reopen_its_own_state(tmp_path: Path) -> None:
    """A reopen after a simulated crash, while the old ledger is not closed yet, is the same owner;
    once every holder in the process closes, another process may take it."""
    state = tmp_path / "bridge.db"
    first = await Bridge.open(state)
    second = await Bridge.open(state)
    await first.close()
    with _child_opening(state) as answer:
        assert answer == "busy"  # this process still holds it
    await second.close()
    with _child_opening(state) as answer:
        assert answer == "held"
        with pytest.raises(StateFileBusy, match=r"in use by another process \(pid \d+\)"):
            await Bridge.open(state)
    await (await Bridge.open(state)).close()  # the child is gone: free again


@contextlib.contextmanager
def _child_opening(state: Path) -> Iterator[str]:
    """A child process that opens ``state``: "held" (it keeps it until the block ends) or
    "busy"."""
    code = (
        "import asyncio, sys\n"
        "from bridges import Bridge, StateFileBusy\n"
        "async def main():\n"
        "    try:\n"
        "        await Bridge.open(sys.argv[1])\n"
        "    except StateFileBusy:\n"
        "        print('busy', flush=True); return\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            yield child.stdout.readline().strip()
        finally:
            child.kill()
