"""``condpay bridge serve`` (mounted by the core's CLI) and ``python -m bridges serve``.

    serve --addr HOST:PORT --state PATH (--tls-dir DIR | --insecure) [--reflection]
          [--export-validators PATH] [--fault SPEC]... [--fault-seed N]
          [--block-interval-ms N] [--bootstrap [--bank ID[=NAME]]...]

Mutual TLS with the files of ``--tls-dir`` (server.pem, server.key, ca.pem; ``condpay certs
init`` writes var/certs/bridge), each caller a participant identity from its certificate; or,
only when asked, ``--insecure``: plaintext, each caller's identity from its
``condpay-bridge-participant`` metadata. Server reflection is on in the insecure mode, off under
TLS unless ``--reflection`` or ``CONDPAY_REFLECTION=1``.

Fault switches (docs/bridge.md, bridges/_faults.py) come from ``--fault`` (repeatable) and the
``CONDPAY_BRIDGE_FAULTS`` / ``CONDPAY_BRIDGE_FAULT_SEED`` environment, both applied, ``--fault``
after the environment. The seed: the environment's, unless a ``seed=N`` inside ``--fault`` says
otherwise, unless ``--fault-seed`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridges import limits
from bridges._faults import ENV_FAULTS, FaultPlan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condpay bridge", description="The mBridge-style multi-CBDC platform mock."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the bridge as a gRPC server")
    serve.add_argument("--addr", default="127.0.0.1:50061", help="HOST:PORT (port 0: any free)")
    serve.add_argument("--state", required=True, type=Path, help="the SQLite state file")
    serve.add_argument(
        "--tls-dir", type=Path, default=None, help="mutual TLS files (server.pem, .key, ca.pem)"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext development mode: identities from condpay-bridge-participant metadata",
    )
    serve.add_argument(
        "--reflection",
        action="store_true",
        default=None,
        help="server reflection under TLS too (also CONDPAY_REFLECTION=1)",
    )
    serve.add_argument(
        "--export-validators",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the validator set (JSON) for the core to pin (CONDPAY_BRIDGE_VALIDATORS)",
    )
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="fault switches, e.g. drop_reply=30,on=commit (repeatable; docs/bridge.md)",
    )
    serve.add_argument("--fault-seed", type=int, default=None, help="seed of the fault draws")
    serve.add_argument(
        "--metrics-addr",
        default=os.environ.get("CONDPAY_BRIDGE_METRICS_ADDR", ""),
        metavar="HOST:PORT",
        help="serve Prometheus /metrics there (env CONDPAY_BRIDGE_METRICS_ADDR; default off)",
    )
    serve.add_argument(
        "--block-interval-ms",
        type=int,
        default=limits.BLOCK_INTERVAL_MS,
        help="expire, seal and certify this often",
    )
    serve.add_argument(
        "--bootstrap",
        action="store_true",
        help="register the demo banks, provider and rates and fund them (idempotent)",
    )
    serve.add_argument(
        "--bank",
        action="append",
        default=[],
        metavar="ID[=NAME]",
        help="with --bootstrap: one more bank to register and fund like the demo banks "
        "(repeatable), e.g. the settlement core's gateway CONDPAY",
    )
    return parser


def _is_host_port(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def _banks(specs: Sequence[str]) -> dict[str, str]:
    """``["CONDPAY", "X=Bank X"]`` -> {id: name}; ValueError for an empty id."""
    banks: dict[str, str] = {}
    for spec in specs:
        bank_id, _, name = spec.partition("=")
        if not bank_id.strip():
            raise ValueError(f"--bank {spec!r}: no bank id")
        banks[bank_id.strip()] = name.strip() or bank_id.strip()
    return banks


def fault_plan(
    faults: Sequence[str], fault_seed: int | None = None, env: Mapping[str, str] | None = None
) -> FaultPlan:
    """The server's plan: the environment's (``env``, default ``os.environ``), then each
    ``--fault`` spec over it (a later switch wins, ``seed=N`` included), then ``--fault-seed``
    when given. ValueError for a bad spec."""
    env_plan = FaultPlan.from_env(env)
    # The env plan's spec always ends in its seed, so a seed= in --fault comes later and wins.
    return FaultPlan.parse([env_plan.spec(), *faults], seed=fault_seed)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = fault_plan(args.fault, args.fault_seed)
    except ValueError as exc:
        print(f"condpay bridge: bad fault spec ({ENV_FAULTS} or --fault): {exc}", file=sys.stderr)
        return 2
    if args.block_interval_ms <= 0:
        print("condpay bridge: --block-interval-ms must be positive", file=sys.stderr)
        return 2
    try:
        banks = _banks(args.bank)
    except ValueError as exc:
        print(f"condpay bridge: {exc}", file=sys.stderr)
        return 2
    if banks and not args.bootstrap:
        print("condpay bridge: --bank registers a bank at --bootstrap only", file=sys.stderr)
        return 2
    if (args.tls_dir is None) == (not args.insecure):
        print(
            "condpay bridge: give --tls-dir DIR (mutual TLS) or --insecure (development), one",
            file=sys.stderr,
        )
        return 2
    from bridges._tls import ServerTls, TlsSetupError

    try:
        tls = None if args.tls_dir is None else ServerTls.from_dir(args.tls_dir)
    except TlsSetupError as exc:
        print(f"condpay bridge: {exc}", file=sys.stderr)
        return 2
    if args.metrics_addr and not _is_host_port(args.metrics_addr):
        print(
            f"condpay bridge: --metrics-addr {args.metrics_addr!r} is not HOST:PORT",
            file=sys.stderr,
        )
        return 2
    reflection_on = args.reflection
    if reflection_on is None and os.environ.get("CONDPAY_REFLECTION", "").strip() in {"1", "true"}:
        reflection_on = True
    from bridges._logging import configure_json_logging

    configure_json_logging()
    from condpay import event_loop

    from bridges import StateFileBusy
    from bridges._server import serve  # grpc and the stubs load only when serving

    try:
        event_loop.run(
            serve(
                args.addr,
                args.state,
                plan=plan,
                block_interval_ms=args.block_interval_ms,
                bootstrap=args.bootstrap,
                banks=banks,
                tls=tls,
                reflection_on=reflection_on,
                export_validators_to=args.export_validators,
                metrics_addr=args.metrics_addr,
            )
        )
    except StateFileBusy as busy:
        print(f"condpay bridge: {busy}", file=sys.stderr)
        return 2
    return 0
