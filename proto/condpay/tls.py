"""Mutual TLS for clients: channel credentials from an identity directory made by ``condpay certs``.

    channel = secure_channel("127.0.0.1:50051", "var/certs", identity="platform/gba-trade")
    async with Client("127.0.0.1:50051", caller="platform/gba-trade", channel=channel) as client:
        ...
    await channel.close()

The server takes the caller's identity from the certificate alone. The development server's
certificate names DNS ``localhost`` and IP ``127.0.0.1``, so both targets verify as they are; for
any other address give ``server_name`` (a name the server certificate carries).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc

# The shape of <role>/<id> (the server checks the role itself); also keeps paths inside the dir.
_IDENTITY: Final = re.compile(r"([a-z][a-z_]{0,31})/([a-z0-9][a-z0-9._-]{0,63})")


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """The three files a client needs: the CA to trust, its certificate and its private key."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def identity_files(certs_dir: str | Path, identity: str) -> IdentityFiles:
    """Where ``condpay certs init`` put ``identity``'s files: ``clients/<role>_<id>.pem/.key``."""
    match = _IDENTITY.fullmatch(identity)
    if match is None:
        raise ValueError(f"identity must be <role>/<id>, got {identity!r}")
    root = Path(certs_dir)
    stem = f"{match[1]}_{match[2]}"
    return IdentityFiles(
        ca_path=root / "ca.pem",
        cert_path=root / "clients" / f"{stem}.pem",
        key_path=root / "clients" / f"{stem}.key",
    )


def channel_credentials(
    ca_path: str | Path, cert_path: str | Path, key_path: str | Path
) -> grpc.ChannelCredentials:
    """Trust only ``ca_path`` for the server; present ``cert_path`` as the client's identity."""
    credentials: grpc.ChannelCredentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_path).read_bytes(),
        private_key=Path(key_path).read_bytes(),
        certificate_chain=Path(cert_path).read_bytes(),
    )
    return credentials


def secure_channel(
    target: str,
    certs_dir: str | Path,
    identity: str,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target`` authenticated as ``identity`` (``<role>/<id>``).

    ``server_name`` overrides the name checked against the server certificate (only needed when
    ``target`` is neither ``localhost`` nor ``127.0.0.1`` nor a ``--server-name`` of the cert).
    """
    files = identity_files(certs_dir, identity)
    all_options = list(options)
    if server_name is not None:
        all_options.append(("grpc.ssl_target_name_override", server_name))
    channel: grpc.aio.Channel = grpc.aio.secure_channel(
        target,
        channel_credentials(files.ca_path, files.cert_path, files.key_path),
        options=all_options,
    )
    return channel
