"""``condpay console``: the supervision console, a read-only web page over the gRPC API.

    condpay console --server ADDR --addr HOST:PORT --caller ROLE/ID (--certs-dir DIR | --insecure)

Exit status: 0 after a clean stop (Ctrl-C), 2 for bad arguments, an identity that may not
supervise (only ``central_bank/...`` and ``auditor/...`` may), one the core refuses, or the web
libraries missing (the ``condpay[sim]`` extra), 3 when the core does not answer at start. Each
is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import Final

from condpay.client import Client, RetryPolicy
from condpay.errors import ApiError, PermissionDenied, Unauthenticated, Unavailable
from condpay.tls import identity_files
from condpay.v1 import central_bank_pb2, evidence_pb2

__all__ = ["SUPERVISOR_ROLES", "WEB_MISSING", "build_parser", "main", "web_available"]

#: The roles that may read the whole picture the console draws (docs/api.md's role table).
SUPERVISOR_ROLES: Final = ("central_bank", "auditor")
#: Said when starlette, jinja2 or uvicorn cannot be imported.
WEB_MISSING: Final = (
    "the console needs starlette, jinja2 and uvicorn, which are not installed "
    "(pip install 'condpay[sim]')"
)
#: A page's calls give up after this long (a core that does not answer: the page says so).
CALL_DEADLINE_SECONDS: Final = 10.0
PROG: Final = "condpay console"


def web_available() -> bool:
    """Whether the console's web libraries (the ``condpay[sim]`` extra) can be imported."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The supervision console (condpay console): a read-only web page over the "
        "gRPC API for a central bank or an auditor: supply and its audit, open escrows, "
        "payments and their timelines with evidence bundles, bridge settlements.",
    )
    parser.add_argument("--server", required=True, metavar="ADDR", help="HOST:PORT of the core")
    parser.add_argument(
        "--addr",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the web page listens (default 127.0.0.1:8080; port 0: any free port)",
    )
    parser.add_argument(
        "--caller",
        required=True,
        metavar="ROLE/ID",
        help="the identity every call is made with: central_bank/<id> or auditor/<id>",
    )
    parser.add_argument(
        "--certs-dir",
        metavar="DIR",
        help="mutual TLS with the caller's certificate from DIR (condpay certs init/issue)",
    )
    parser.add_argument("--server-name", help="the name the server certificate carries")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, the identity sent as metadata: a development server only",
    )
    parser.add_argument(
        "--refresh",
        type=int,
        default=5,
        metavar="SECONDS",
        help="the overview and the lists reload every SECONDS (0: never); an open payment's "
        "page follows WatchPayment unless 0",
    )
    parser.add_argument(
        "--checkpoint-key",
        metavar="KEY",
        help="the checkpoint public key evidence bundles are verified against (checkpoint.pub "
        "or 64 hex digits); default: CERTS_DIR/checkpoint.pub with --certs-dir, else the key "
        "the core publishes (GetCheckpointKey)",
    )
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--addr {value!r}: must be HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    role, _, ident = args.caller.partition("/")
    if role not in SUPERVISOR_ROLES or not ident:
        _say(
            f"{args.caller} may not supervise: the console reads as a central bank "
            "(central_bank/<id>) or an auditor (auditor/<id>)"
        )
        return 2
    if (args.certs_dir is None) == (not args.insecure):
        _say("give --certs-dir DIR (mutual TLS) or --insecure (a development server)")
        return 2
    if args.refresh < 0:
        _say(f"--refresh {args.refresh}: must be 0 or more seconds")
        return 2
    try:
        host, port = _host_port(args.addr)
        if args.certs_dir is not None:
            files = identity_files(args.certs_dir, args.caller)
            for path in (files.ca_path, files.cert_path, files.key_path):
                if not path.is_file():
                    raise ValueError(
                        f"no {path} (condpay certs issue {args.caller} --certs-dir "
                        f"{args.certs_dir} makes it)"
                    )
        key, key_source = _trusted_key(args)
    except ValueError as error:
        _say(str(error))
        return 2
    if not web_available():
        _say(WEB_MISSING)
        return 2
    try:
        return asyncio.run(_serve(args, host, port, key, key_source))
    except KeyboardInterrupt:
        return 0


def _trusted_key(args: argparse.Namespace) -> tuple[bytes | None, str]:
    from condpay.evidence_cli import checkpoint_key

    if args.checkpoint_key is not None:
        return checkpoint_key(args.checkpoint_key), args.checkpoint_key
    if args.certs_dir is not None:
        from pathlib import Path

        pub = Path(args.certs_dir) / "checkpoint.pub"
        if pub.is_file():
            return checkpoint_key(str(pub)), str(pub)
    return None, ""


async def _serve(
    args: argparse.Namespace, host: str, port: int, key: bytes | None, key_source: str
) -> int:
    import uvicorn

    from sim_central_bank.console.app import ConsoleSettings, build_app

    client = Client(
        args.server,
        caller=args.caller,
        certs_dir=args.certs_dir,
        server_name=args.server_name,
        retry=RetryPolicy(
            deadline_seconds=CALL_DEADLINE_SECONDS, attempt_timeout_seconds=CALL_DEADLINE_SECONDS
        ),
    )
    try:
        # One read at start: the core answers, and it lets this identity supervise.
        probe = client.with_caller(args.caller)
        probe.retry_policy = RetryPolicy(deadline_seconds=3.0, attempt_timeout_seconds=3.0)
        try:
            await probe.api.central_bank.get_supply(central_bank_pb2.GetSupplyRequest())
            if key is None:
                published = await probe.api.evidence.get_checkpoint_key(
                    evidence_pb2.GetCheckpointKeyRequest()
                )
                key = published.public_key
                key_source = "the key the core publishes"
        except (PermissionDenied, Unauthenticated) as error:
            _say(f"the core refuses {args.caller}: {error.code.name} {error.reason}")
            return 2
        except Unavailable as error:
            _say(f"the core at {args.server} does not answer ({error.code.name})")
            return 3
        except ApiError as error:
            _say(f"the core at {args.server} answered {error.code.name} {error.reason}")
            return 3
        finally:
            if args.certs_dir is not None:
                await probe.close()
        settings = ConsoleSettings(
            server=args.server,
            caller=args.caller,
            refresh_seconds=args.refresh,
            checkpoint_key=key,
            checkpoint_key_source=key_source,
        )
        try:
            sock = socket.create_server((host, port))
        except OSError as error:
            _say(f"--addr {host}:{port}: {error.strerror or error}")
            return 2
        config = uvicorn.Config(
            build_app(client, settings), log_level="warning", access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 (a flag, no event)
            await asyncio.sleep(0.05)
        bound = sock.getsockname()
        print(
            f"{PROG}: serving http://{host}:{bound[1]}/ as {args.caller} "
            f"(core at {args.server}, read-only)",
            flush=True,
        )
        if host not in ("127.0.0.1", "localhost", "::1"):
            _say(
                f"warning: {host} is not a loopback address; the console has no login of its "
                f"own, so whoever reaches it reads as {args.caller}"
            )
        await serving
        return 0
    finally:
        await client.close()
