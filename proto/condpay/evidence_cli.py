"""``condpay evidence``: export a payment's evidence bundle, verify one offline.

    condpay evidence export PAYMENT_ID --server ADDR --caller ROLE/ID (--certs DIR | --insecure)
                            -o FILE
    condpay evidence verify FILE [--checkpoint-key KEY]

``verify`` needs no server (client package only: ``python -m condpay.evidence_cli verify ...``).
Exit status: 0 verified (a short summary on stdout), 1 a bundle that does not verify (the first
thing that failed on stderr) or a server's refusal, 2 a usage error or an unreadable file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from condpay.evidence import EvidenceError, verify_bundle

__all__ = ["checkpoint_key", "main"]


def checkpoint_key(value: str) -> bytes:
    """A checkpoint public key: a PEM file (``checkpoint.pub`` from ``condpay certs init``), or
    the raw 32-byte key in hex (``GetCheckpointKey``'s ``public_key``). ValueError otherwise."""
    text = value.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{value!r} is neither a key file nor 64 hex digits")
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{value} is not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{value} is neither PEM nor hex") from None
    if len(raw) != 32:
        raise ValueError(f"{value} does not hold a 32-byte Ed25519 key")
    return raw


def _verify(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
        key = None if args.checkpoint_key is None else checkpoint_key(args.checkpoint_key)
    except (OSError, ValueError) as error:
        print(f"condpay evidence verify: {error}", file=sys.stderr)
        return 2
    try:
        result = verify_bundle(data, key)
    except EvidenceError as error:
        print(f"NOT VERIFIED: {error.what}: {error.why}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"VERIFIED {args.file}")
    for line in result.summary:
        print(f"  {line}")
    return 0


async def _fetch(args: argparse.Namespace) -> bytes:
    from condpay.client import Client
    from condpay.v1 import evidence_pb2

    async with Client(
        args.server, caller=args.caller, certs_dir=args.certs, server_name=args.server_name
    ) as client:
        reply = await client.api.evidence.get_payment_evidence(
            evidence_pb2.GetPaymentEvidenceRequest(payment_id=args.payment_id)
        )
    return reply.bundle


def _export(args: argparse.Namespace) -> int:
    from condpay.errors import ApiError

    if (args.certs is None) == (not args.insecure):
        print(
            "condpay evidence export: give --certs DIR (mutual TLS) or --insecure (a development "
            "server)",
            file=sys.stderr,
        )
        return 2
    try:
        bundle = asyncio.run(_fetch(args))
    except ApiError as error:
        print(f"condpay evidence export: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a bad identity
        print(f"condpay evidence export: {error}", file=sys.stderr)
        return 2
    try:
        Path(args.output).write_bytes(bundle)
    except OSError as error:
        print(f"condpay evidence export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(bundle)} bytes)")
    return 0


def build_parser(prog: str = "condpay evidence") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="payment evidence bundles: export one, verify one offline"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a payment's evidence bundle to a file")
    export.add_argument("payment_id")
    export.add_argument("--server", required=True, metavar="ADDR", help="HOST:PORT of the core")
    export.add_argument(
        "--caller",
        required=True,
        metavar="ROLE/ID",
        help="who asks (auditor/..., central_bank/..., platform/..., institution/...)",
    )
    export.add_argument(
        "--certs", metavar="DIR", help="mutual TLS with the caller's certificate in DIR"
    )
    export.add_argument("--server-name", help="the name the server certificate carries")
    export.add_argument(
        "--insecure", action="store_true", help="plaintext, to a development server"
    )
    export.add_argument("-o", "--output", required=True, metavar="FILE")
    export.set_defaults(run=_export)
    check = commands.add_parser("verify", help="verify a bundle offline")
    check.add_argument("file")
    check.add_argument(
        "--checkpoint-key",
        metavar="KEY",
        help="the checkpoint public key you trust: checkpoint.pub (PEM) or 64 hex digits; "
        "without it the key in the bundle is used, with a warning",
    )
    check.set_defaults(run=_verify)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "condpay evidence") -> int:
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m condpay.evidence_cli"))
