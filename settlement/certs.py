"""A development certificate authority for condpay's mutual TLS (``condpay certs``).

Every caller is a client certificate signed by one CA. The identity ``<role>/<id>`` is carried as
exactly one SAN URI ``condpay://<role>/<id>`` (what the server trusts) and, for people reading the
certificate, as the subject common name. Keys are ECDSA P-256, signatures ECDSA with SHA-256.

    condpay certs init [--dir var/certs] [--ca-dir var/ca] [--identity ROLE/ID ...]
                       [--bridge-identity KIND/ID ...] [--server-name NAME ...] [--force]
    condpay certs issue ROLE/ID [--dir var/certs] [--ca-dir var/ca] [--force]
    condpay certs issue-bridge KIND/ID [--dir var/certs] [--ca-dir var/ca] [--force]

Layout (private keys mode 0600, certificates 0644)::

    --ca-dir (default: ``ca`` beside --dir, so var/ca)
        ca.key                        the CA's private key: stays with whoever issues
    --dir (var/certs: what the core's server reads)
        ca.pem                        the CA's certificate
        server.pem  server.key        SANs: DNS localhost, IP 127.0.0.1, and every --server-name
        clients/<role>_<id>.pem  .key one per identity (no role is a prefix of another: unique)
        bridge/                       what the bridge reads (``bridge serve --tls-dir``)
            ca.pem  server.pem  server.key
            participants/<kind>_<id>.pem  .key   one per bridge identity, SAN URI
                                                 condpay-bridge://<kind>/<id> (docs/bridge.md)

The CA's private key is never in a directory a server reads: the core's server and the bridge
refuse to start when they find a ``ca.key`` there. This is a development CA (the CA key is
unencrypted, there is no revocation list); a production deployment issues from its own PKI with
the same SAN URI schemes.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridges import Identity as BridgeIdentity
from bridges import parse_identity as parse_bridge_identity
from settlement.api.identity import Caller, parse_caller
from settlement.errors import SettlementError

URI_SCHEME: Final = "condpay"
DEFAULT_DIR: Final = Path("var/certs")
# One identity per role, enough to run every flow of the examples on a development machine.
DEFAULT_IDENTITIES: Final = (
    "central_bank/pboc",
    "institution/icbc-sz",
    "platform/gba-trade",
    "financier/bank-a",
    "oracle/customs.cn.shenzhen",
    "auditor/audit-1",
)
# The bridge's participants of the demo and the simulator: the core's gateway, the operator, an
# auditor, the five central banks, the demo banks and the liquidity provider (bridges/_setup.py).
DEFAULT_BRIDGE_IDENTITIES: Final = (
    "bank/CONDPAY",
    "operator/bridge-operator",
    "auditor/bridge-auditor",
    "central_bank/PBoC",
    "central_bank/HKMA",
    "central_bank/BOT",
    "central_bank/CBUAE",
    "central_bank/SAMA",
)
SERVER_NAMES_DEFAULT: Final = ("localhost", "127.0.0.1")
CA_VALIDITY: Final = timedelta(days=5 * 365)
LEAF_VALIDITY: Final = timedelta(days=365)
# Tolerates a peer whose clock runs a little behind ours.
BACKDATE: Final = timedelta(minutes=5)
ORGANIZATION: Final = "condpay development"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def identity_uri(caller: Caller) -> str:
    """The SAN URI that names ``caller``: ``condpay://<role>/<id>``."""
    return f"{URI_SCHEME}://{caller.role.value}/{caller.id}"


def client_file_stem(caller: Caller) -> str:
    """``<role>_<id>``: the file name (without suffix) of a client certificate in ``clients/``."""
    return f"{caller.role.value}_{caller.id}"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def create_ca(
    common_name: str = "condpay development CA",
    *,
    now: datetime | None = None,
    validity: timedelta = CA_VALIDITY,
) -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    start = _now(now) - BACKDATE
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def create_leaf(
    ca: KeyPair,
    common_name: str,
    alt_names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    *,
    now: datetime | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> KeyPair:
    """An end-entity certificate signed by ``ca`` for one purpose (serverAuth or clientAuth)."""
    key = _new_key()
    start = _now(now) - BACKDATE
    # A leaf never outlives the CA that vouches for it.
    end = min(start + validity, ca.certificate.not_valid_after_utc)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def server_alt_names(names: Iterable[str] = ()) -> list[x509.GeneralName]:
    """DNS ``localhost``, IP ``127.0.0.1`` and each extra name (an IP literal or a DNS name)."""
    result: list[x509.GeneralName] = []
    for name in dict.fromkeys((*SERVER_NAMES_DEFAULT, *names)):
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def create_server_certificate(
    ca: KeyPair,
    names: Iterable[str] = (),
    *,
    now: datetime | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> KeyPair:
    """The server's certificate (serverAuth) for localhost, 127.0.0.1 and ``names``."""
    return create_leaf(
        ca,
        "condpay server",
        server_alt_names(names),
        ExtendedKeyUsageOID.SERVER_AUTH,
        now=now,
        validity=validity,
    )


def create_client_certificate(
    ca: KeyPair,
    caller: Caller,
    *,
    now: datetime | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> KeyPair:
    """A caller's certificate (clientAuth): exactly one SAN URI ``condpay://<role>/<id>``."""
    return create_leaf(
        ca,
        str(caller),
        [x509.UniformResourceIdentifier(identity_uri(caller))],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        validity=validity,
    )


def create_bridge_certificate(
    ca: KeyPair,
    identity: BridgeIdentity,
    *,
    now: datetime | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> KeyPair:
    """A bridge participant's certificate (clientAuth): exactly one SAN URI
    ``condpay-bridge://<kind>/<id>``, which the core's server does not take for a caller."""
    return create_leaf(
        ca,
        f"bridge {identity}",
        [x509.UniformResourceIdentifier(identity.uri)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        validity=validity,
    )


# -- files ------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on (a key is never readable by
    others, even for a moment), replacing any previous file in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)  # the umask may have taken bits away from a certificate
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pair(pair: KeyPair, certificate_path: Path, key_path: Path) -> list[Path]:
    """Write the certificate (0644) and the private key (0600); returns both paths."""
    _write_atomically(key_path, key_pem(pair.key), 0o600)
    _write_atomically(certificate_path, certificate_pem(pair.certificate), 0o644)
    return [certificate_path, key_path]


def load_pair(certificate_path: Path, key_path: Path) -> KeyPair:
    certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an ECDSA private key")
    return KeyPair(certificate, key)


# -- the journal checkpoint key (docs/evidence.md) ---------------------------------------------
CHECKPOINT_KEY_FILE = "checkpoint.key"


def load_or_create_checkpoint_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The Ed25519 key in ``path`` (PEM), or a new one written there (0600, its public key
    beside it in ``.pub``); whether it was created. Processes racing to create it all end with
    the one that got there first. ValueError for a file that is no Ed25519 private key."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # never replaces a key another process just made
            created = True
        except FileExistsError:
            created = False
        finally:
            temporary.unlink(missing_ok=True)
        if created:
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_atomically(path.with_suffix(".pub"), public, 0o644)
            return key, True
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded, False


@dataclass(frozen=True, slots=True)
class Layout:
    """Where ``certs init`` puts each file under ``root`` (and the CA key under ``ca_root``,
    by default ``ca`` beside ``root``)."""

    root: Path
    ca_root: Path | None = None

    @property
    def ca_directory(self) -> Path:
        return self.ca_root if self.ca_root is not None else self.root.parent / "ca"

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_directory / "ca.key"

    @property
    def bridge(self) -> Path:
        return self.root / "bridge"

    def bridge_participant(self, identity: BridgeIdentity, suffix: str) -> Path:
        return self.bridge / "participants" / f"{identity.kind.value}_{identity.id}.{suffix}"

    @property
    def server_certificate(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    def client_certificate(self, caller: Caller) -> Path:
        return self.clients / f"{client_file_stem(caller)}.pem"

    def client_key(self, caller: Caller) -> Path:
        return self.clients / f"{client_file_stem(caller)}.key"


class CertsError(Exception):
    """A ``condpay certs`` command that must not go ahead (would overwrite, no CA, bad identity)."""


def parse_identity(text: str) -> Caller:
    """``<role>/<id>`` with the same rules the server applies."""
    try:
        return parse_caller(text)
    except SettlementError as error:
        raise CertsError(f"{text!r}: {error.message}") from None


def parse_bridge(text: str) -> BridgeIdentity:
    """``<kind>/<id>`` of a bridge participant (bridges/_identity.py's rules)."""
    try:
        return parse_bridge_identity(text)
    except ValueError as error:
        raise CertsError(str(error)) from None


def init_certificates(
    root: Path,
    identities: Sequence[Caller],
    server_names: Sequence[str] = (),
    *,
    bridge_identities: Sequence[BridgeIdentity] = (),
    ca_root: Path | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> list[Path]:
    """A new CA (its key in the CA directory, away from ``root``), the server certificate, one
    client certificate per identity, and the bridge's files: its server certificate and one
    certificate per bridge identity.

    Refuses when a CA is already there unless ``force``; with ``force``, client certificates of
    the replaced CA (which no server would accept any more) are removed.
    """
    layout = Layout(root, ca_root)
    if layout.ca_directory.resolve() == root.resolve():
        raise CertsError("--ca-dir must not be --dir: the server reads --dir")
    if not force and (layout.ca_certificate.exists() or layout.ca_key.exists()):
        raise CertsError(f"a CA already exists in {root}; pass --force to replace it")
    ca = create_ca(now=now)
    server = create_server_certificate(ca, server_names, now=now)
    bridge_server = create_server_certificate(ca, server_names, now=now)
    clients = {caller: create_client_certificate(ca, caller, now=now) for caller in identities}
    bridges = {i: create_bridge_certificate(ca, i, now=now) for i in bridge_identities}
    if force:
        for folder in (layout.clients, layout.bridge / "participants"):
            if folder.is_dir():
                for stale in sorted(folder.glob("*.pem")) + sorted(folder.glob("*.key")):
                    stale.unlink()
    written = write_pair(ca, layout.ca_certificate, layout.ca_key)
    written += write_pair(server, layout.server_certificate, layout.server_key)
    for caller, pair in clients.items():
        written += write_pair(pair, layout.client_certificate(caller), layout.client_key(caller))
    _write_atomically(layout.bridge / "ca.pem", certificate_pem(ca.certificate), 0o644)
    written.append(layout.bridge / "ca.pem")
    written += write_pair(bridge_server, layout.bridge / "server.pem", layout.bridge / "server.key")
    for identity, pair in bridges.items():
        written += write_pair(
            pair,
            layout.bridge_participant(identity, "pem"),
            layout.bridge_participant(identity, "key"),
        )
    # The journal's signing identity outlives a replaced CA: kept when there is one.
    checkpoint_key = root / CHECKPOINT_KEY_FILE
    if load_or_create_checkpoint_key(checkpoint_key)[1]:
        written += [checkpoint_key, checkpoint_key.with_suffix(".pub")]
    return written


def _load_ca(layout: Layout) -> KeyPair:
    if not (layout.ca_certificate.exists() and layout.ca_key.exists()):
        raise CertsError(
            f"no CA ({layout.ca_certificate}, {layout.ca_key}); run `condpay certs init` first"
        )
    return load_pair(layout.ca_certificate, layout.ca_key)


def issue_certificate(
    root: Path,
    caller: Caller,
    *,
    ca_root: Path | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> list[Path]:
    """A further client certificate from the CA."""
    layout = Layout(root, ca_root)
    ca = _load_ca(layout)
    if not force and layout.client_certificate(caller).exists():
        raise CertsError(f"{layout.client_certificate(caller)} exists; pass --force to replace it")
    return write_pair(
        create_client_certificate(ca, caller, now=now),
        layout.client_certificate(caller),
        layout.client_key(caller),
    )


def issue_bridge_certificate(
    root: Path,
    identity: BridgeIdentity,
    *,
    ca_root: Path | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> list[Path]:
    """A further bridge participant certificate from the CA (``<root>/bridge/participants``)."""
    layout = Layout(root, ca_root)
    ca = _load_ca(layout)
    certificate = layout.bridge_participant(identity, "pem")
    if not force and certificate.exists():
        raise CertsError(f"{certificate} exists; pass --force to replace it")
    return write_pair(
        create_bridge_certificate(ca, identity, now=now),
        certificate,
        layout.bridge_participant(identity, "key"),
    )


# -- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condpay certs",
        description="A development CA for mutual TLS: identities are <role>/<id>.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser(
        "init",
        help="make the CA, the server certificate and client certificates",
        description="Default identities: " + ", ".join(DEFAULT_IDENTITIES),
    )
    init.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: %(default)s")
    init.add_argument("--ca-dir", type=Path, default=None, help=_CA_DIR_HELP)
    init.add_argument(
        "--bridge-identity",
        action="append",
        metavar="KIND/ID",
        help="a bridge participant identity (repeatable; replaces the default set: "
        + ", ".join(DEFAULT_BRIDGE_IDENTITIES)
        + ")",
    )
    init.add_argument(
        "--identity",
        action="append",
        metavar="ROLE/ID",
        help="a client identity (repeatable; replaces the default set)",
    )
    init.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a further DNS name or IP for the server certificate (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    issue = commands.add_parser("issue", help="a further client certificate from the CA")
    issue.add_argument("identity", metavar="ROLE/ID")
    issue.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: %(default)s")
    issue.add_argument("--ca-dir", type=Path, default=None, help=_CA_DIR_HELP)
    issue.add_argument("--force", action="store_true", help="replace an existing certificate")
    bridge = commands.add_parser(
        "issue-bridge", help="a bridge participant's certificate (condpay-bridge://KIND/ID)"
    )
    bridge.add_argument("identity", metavar="KIND/ID")
    bridge.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: %(default)s")
    bridge.add_argument("--ca-dir", type=Path, default=None, help=_CA_DIR_HELP)
    bridge.add_argument("--force", action="store_true", help="replace an existing certificate")
    return parser


_CA_DIR_HELP: Final = (
    "where the CA's private key lives, never read by a server (default: ca beside --dir)"
)


def main(argv: list[str]) -> int:
    """``condpay certs ...``; prints each file written. 0 on success, 1 when refused."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            identities = [parse_identity(text) for text in args.identity or DEFAULT_IDENTITIES]
            bridge_identities = [
                parse_bridge(text) for text in args.bridge_identity or DEFAULT_BRIDGE_IDENTITIES
            ]
            written = init_certificates(
                args.dir,
                identities,
                args.server_name,
                bridge_identities=bridge_identities,
                ca_root=args.ca_dir,
                force=args.force,
            )
        elif args.command == "issue":
            written = issue_certificate(
                args.dir, parse_identity(args.identity), ca_root=args.ca_dir, force=args.force
            )
        else:
            written = issue_bridge_certificate(
                args.dir, parse_bridge(args.identity), ca_root=args.ca_dir, force=args.force
            )
    except CertsError as error:
        print(f"condpay certs: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
