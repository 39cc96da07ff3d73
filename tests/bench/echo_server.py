"""The baseline: a plain grpc.aio server whose one unary method returns the request bytes.

``python -m tests.bench.echo_server --addr HOST:PORT`` serves it (a generic handler, bytes in and
out: no protobuf parsing, no interceptor, no logging); :class:`EchoServer` runs that as a child
process, waits until it answers, and stops it with SIGTERM (SIGKILL if it hangs).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import grpc

from sim_central_bank.server_process import free_port

SERVICE = "condpay.bench.Echo"
METHOD = "Echo"
METHOD_PATH = f"/{SERVICE}/{METHOD}"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(addr: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


class EchoServer:
    """The echo server as a child process on a free port of 127.0.0.1."""

    def __init__(self, *, log_path: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.echo_server", "--addr", self.address],
                stdout=log,
                stderr=log,
            )

    async def wait_ready(self, timeout_seconds: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = channel.unary_unary(METHOD_PATH)
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"the echo server exited; see {self.log_path}")
                try:
                    if await call(b"ping", timeout=1) == b"ping":
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the echo server did not answer; see {self.log_path}")
                await asyncio.sleep(0.1)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EchoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a plain grpc.aio echo server (bench baseline)")
    parser.add_argument("--addr", required=True, help="HOST:PORT")
    asyncio.run(serve(parser.parse_args().addr))


if __name__ == "__main__":
    main()
