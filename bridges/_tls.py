"""Mutual TLS for the bridge: the files it serves with, the files a participant dials with.

A bridge TLS directory (``condpay certs init`` writes ``var/certs/bridge``)::

    ca.pem                          the CA every participant's certificate must chain to
    server.pem  server.key          the bridge's server certificate (serverAuth)
    participants/<kind>_<id>.pem    one client certificate (clientAuth) per participant, with the
    participants/<kind>_<id>.key    one SAN URI condpay-bridge://<kind>/<id>

The CA's private key is never in it: a server that finds ``ca.key`` there refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from bridges._identity import Identity

CA_KEY_NAME: Final = "ca.key"


class TlsSetupError(Exception):
    """The TLS files are missing, or a CA private key sits where the server reads."""


def refuse_ca_key(directory: Path) -> None:
    """A server never reads from a directory that holds the CA's private key: whoever can read
    the server's files could then mint any identity."""
    if (directory / CA_KEY_NAME).exists():
        raise TlsSetupError(
            f"{directory / CA_KEY_NAME} is a CA private key in the directory the server reads; "
            "move it out (condpay certs init --ca-dir keeps it in var/ca) and start again"
        )


@dataclass(frozen=True, slots=True)
class ServerTls:
    certificate: Path
    key: Path
    ca: Path

    @classmethod
    def from_dir(cls, directory: Path) -> ServerTls:
        refuse_ca_key(directory)
        files = cls(directory / "server.pem", directory / "server.key", directory / "ca.pem")
        missing = [str(p) for p in (files.certificate, files.key, files.ca) if not p.exists()]
        if missing:
            raise TlsSetupError(
                f"missing {', '.join(missing)}: run `condpay certs init` (or serve --insecure)"
            )
        return files

    def credentials(self) -> grpc.ServerCredentials:
        """Refuses any client without a certificate from the CA."""
        credentials: grpc.ServerCredentials = grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.certificate.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )
        return credentials


def participant_stem(identity: Identity) -> str:
    return f"{identity.kind.value}_{identity.id}"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a participant dials with: its certificate and key, and the CA the bridge's server
    certificate must chain to."""

    certificate: Path
    key: Path
    ca: Path

    @classmethod
    def for_participant(cls, directory: Path, identity: Identity) -> ClientTls:
        stem = participant_stem(identity)
        files = cls(
            directory / "participants" / f"{stem}.pem",
            directory / "participants" / f"{stem}.key",
            directory / "ca.pem",
        )
        missing = [str(p) for p in (files.certificate, files.key, files.ca) if not p.exists()]
        if missing:
            raise TlsSetupError(
                f"missing {', '.join(missing)}: `condpay certs issue-bridge {identity}`"
            )
        return files

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.certificate.read_bytes(),
        )
