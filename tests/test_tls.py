"""Mutual TLS through a real grpc.aio server: the caller is exactly its certificate's identity.

The server here serves one generic method that answers the caller its resolver found (the same
resolver the call wrapper uses), with errors mapped as the API maps them. Certificates come from
the ``condpay certs`` command (``main``) or from settlement/certs.py for the hostile ones.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from condpay.errors import ApiError, from_rpc_error
from condpay.tls import channel_credentials, identity_files, secure_channel
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from settlement import certs
from settlement.api.identity import CALLER_METADATA_KEY, Caller, Role
from settlement.api.status import grpc_status, to_status
from settlement.api.tls import (
    CertificateIdentity,
    IdentityResolver,
    MetadataIdentity,
    caller_from_auth_context,
    identity_resolver,
    server_credentials,
)
from settlement.errors import Reason, SettlementError
from tests.support.reflection import reflection_listed

WHOAMI = "/condpay.test.Whoami/Who"
PLATFORM = "platform/gba-trade"
LOCAL_POOL = (("grpc.use_local_subchannel_pool", 1),)
Code = grpc.StatusCode
ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)


@dataclass
class WhoamiServer:
    port: int
    calls_seen: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def whoami_server(
    resolver: IdentityResolver, credentials: grpc.ServerCredentials | None
) -> AsyncIterator[WhoamiServer]:
    """A real server on an ephemeral port whose one method answers the resolved caller."""
    server = grpc.aio.server()
    running = WhoamiServer(0)

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        running.calls_seen.append(WHOAMI)
        try:
            return str(resolver.resolve(context)).encode()
        except SettlementError as error:
            await context.abort_with_status(grpc_status(to_status(error)))
            raise AssertionError("abort_with_status returns only by raising") from None

    handler = grpc.unary_unary_rpc_method_handler(who)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("condpay.test.Whoami", {"Who": handler}),)
    )
    if credentials is None:
        running.port = server.add_insecure_port("127.0.0.1:0")
    else:
        running.port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield running
    finally:
        await server.stop(0)


def tls_server(root: Path) -> contextlib.AbstractAsyncContextManager[WhoamiServer]:
    layout = certs.Layout(root)
    credentials = server_credentials(
        layout.server_certificate, layout.server_key, layout.ca_certificate
    )
    return whoami_server(CertificateIdentity(), credentials)


async def ask(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    reply: bytes = await channel.unary_unary(WHOAMI)(b"", metadata=metadata, timeout=5)
    return reply.decode()


async def ask_with(credentials: grpc.ChannelCredentials, address: str) -> str:
    async with grpc.aio.secure_channel(address, credentials, options=LOCAL_POOL) as channel:
        return await ask(channel)


def api_error(error: grpc.aio.AioRpcError) -> ApiError:
    return from_rpc_error(error)


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``condpay certs init`` with the default identities."""
    root = tmp_path_factory.mktemp("certs") / "var" / "certs"
    assert certs.main(["init", "--dir", str(root), "--server-name", "condpay.test"]) == 0
    return root


@pytest.fixture(scope="module")
def ca(certs_dir: Path) -> certs.KeyPair:
    layout = certs.Layout(certs_dir)
    return certs.load_pair(layout.ca_certificate, layout.ca_key)


def write_client(pair: certs.KeyPair, directory: Path, name: str) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    certs.write_pair(pair, cert_path, key_path)
    return cert_path, key_path


def credentials_for(
    pair: certs.KeyPair, certs_dir: Path, tmp_path: Path, *, trust: Path | None = None
) -> grpc.ChannelCredentials:
    cert_path, key_path = write_client(pair, tmp_path, "client")
    return channel_credentials(trust or certs.Layout(certs_dir).ca_certificate, cert_path, key_path)


# -- a valid certificate is its identity, and nothing else -------------------------------------
async def test_each_default_identity_is_exactly_its_certificate(certs_dir: Path) -> None:
    async with tls_server(certs_dir) as server:
        for identity in certs.DEFAULT_IDENTITIES:
            async with secure_channel(server.address, certs_dir, identity) as channel:
                assert await ask(channel) == identity
        # The development server certificate names localhost and 127.0.0.1: no override needed.
        target = f"localhost:{server.port}"
        async with secure_channel(target, certs_dir, PLATFORM, options=LOCAL_POOL) as channel:
            assert await ask(channel) == PLATFORM
        # An extra --server-name is honoured through the override.
        async with secure_channel(
            server.address, certs_dir, PLATFORM, server_name="condpay.test", options=LOCAL_POOL
        ) as channel:
            assert await ask(channel) == PLATFORM


async def test_caller_metadata_cannot_spoof_another_identity(certs_dir: Path) -> None:
    async with (
        tls_server(certs_dir) as server,
        secure_channel(server.address, certs_dir, PLATFORM) as channel,
    ):
        for claimed in ("central_bank/pboc", "platform/someone-else", "not an identity"):
            assert await ask(channel, ((CALLER_METADATA_KEY, claimed),)) == PLATFORM


# -- refused at the handshake: the handler never runs ------------------------------------------
def _hostile_client(kind: str, ca: certs.KeyPair) -> certs.KeyPair | None:
    caller = Caller(Role.PLATFORM, "gba-trade")
    now = datetime.now(UTC)
    if kind == "no certificate":
        return None
    if kind == "another CA":
        return certs.create_client_certificate(certs.create_ca(), caller)
    if kind == "expired":
        return certs.create_client_certificate(
            ca, caller, now=now - timedelta(days=30), validity=timedelta(days=1)
        )
    if kind == "not yet valid":
        return certs.create_client_certificate(ca, caller, now=now + timedelta(days=30))
    if kind == "serverAuth only":  # right CA and identity, wrong purpose
        uri = x509.UniformResourceIdentifier(certs.identity_uri(caller))
        return certs.create_leaf(ca, str(caller), [uri], ExtendedKeyUsageOID.SERVER_AUTH)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["no certificate", "another CA", "expired", "not yet valid", "serverAuth only"]
)
async def test_handshake_refuses(
    kind: str, certs_dir: Path, ca: certs.KeyPair, tmp_path: Path
) -> None:
    pair = _hostile_client(kind, ca)
    ca_pem = certs.Layout(certs_dir).ca_certificate.read_bytes()
    if pair is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    else:
        credentials = credentials_for(pair, certs_dir, tmp_path)
    async with tls_server(certs_dir) as server:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask_with(credentials, server.address)
        assert refused.value.code() == Code.UNAVAILABLE
        assert server.calls_seen == []


async def test_a_client_refuses_a_server_from_another_ca(certs_dir: Path, tmp_path: Path) -> None:
    """Impersonating the server needs the condpay CA too."""
    assert certs.main(["init", "--dir", str(tmp_path / "other")]) == 0
    async with tls_server(tmp_path / "other") as impostor:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with secure_channel(impostor.address, certs_dir, PLATFORM) as channel:
                await ask(channel)
        assert refused.value.code() == Code.UNAVAILABLE
        assert impostor.calls_seen == []


async def test_plaintext_client_is_refused_by_a_tls_server(certs_dir: Path) -> None:
    async with (
        tls_server(certs_dir) as server,
        grpc.aio.insecure_channel(server.address, options=LOCAL_POOL) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask(channel, ((CALLER_METADATA_KEY, "central_bank/pboc"),))
        assert refused.value.code() == Code.UNAVAILABLE
        assert server.calls_seen == []


# -- verified, but no single condpay identity: CALLER_UNKNOWN ----------------------------------
def _uri(text: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(text)


ODD_CERTIFICATES: dict[str, list[x509.GeneralName]] = {
    "no SAN at all": [],
    "a DNS name only": [x509.DNSName("platform.example")],
    "two identities": [_uri("condpay://platform/gba-trade"), _uri("condpay://central_bank/pboc")],
    "the same identity twice": [_uri("condpay://platform/a"), _uri("condpay://platform/a")],
    "an unknown role": [_uri("condpay://king/x")],
    "an id with capitals": [_uri("condpay://platform/GBA")],
    "a path below the id": [_uri("condpay://platform/gba/extra")],
    "an upper-case scheme": [_uri("CONDPAY://platform/gba-trade")],
    "no authority": [_uri("condpay:platform/gba-trade")],
    # what the mixed x509_subject_alternative_name list (peer_identities) would have accepted
    "a DNS SAN that looks like an identity": [x509.DNSName("condpay://central_bank/pboc")],
    "only another scheme": [_uri("spiffe://condpay/platform/gba-trade")],
}


@pytest.mark.parametrize("case", sorted(ODD_CERTIFICATES))
async def test_certificate_without_exactly_one_identity_is_caller_unknown(
    case: str, certs_dir: Path, ca: certs.KeyPair, tmp_path: Path
) -> None:
    pair = certs.create_leaf(
        ca, "central_bank/pboc", ODD_CERTIFICATES[case], ExtendedKeyUsageOID.CLIENT_AUTH
    )
    async with tls_server(certs_dir) as server:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask_with(credentials_for(pair, certs_dir, tmp_path), server.address)
    error = api_error(refused.value)
    assert (error.code, error.reason) == (Code.UNAUTHENTICATED, "CALLER_UNKNOWN")
    assert server.calls_seen == [WHOAMI]  # verified by TLS, refused by the resolver


async def test_other_schemes_beside_one_identity_are_ignored(
    certs_dir: Path, ca: certs.KeyPair, tmp_path: Path
) -> None:
    names = [_uri("spiffe://example/x"), _uri("condpay://auditor/audit-9"), x509.DNSName("a.b")]
    pair = certs.create_leaf(ca, "someone", names, ExtendedKeyUsageOID.CLIENT_AUTH)
    async with tls_server(certs_dir) as server:
        assert await ask_with(credentials_for(pair, certs_dir, tmp_path), server.address) == (
            "auditor/audit-9"
        )


# -- the resolver without a network ------------------------------------------------------------
def test_identity_comes_from_the_pem_when_grpc_lists_no_uris(ca: certs.KeyPair) -> None:
    pair = certs.create_client_certificate(ca, Caller(Role.ORACLE, "customs.cn.shenzhen"))
    pem = certs.certificate_pem(pair.certificate)
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]}
    assert caller_from_auth_context(context) == Caller(Role.ORACLE, "customs.cn.shenzhen")
    two = certs.create_leaf(
        ca,
        "x",
        [_uri("condpay://oracle/a"), _uri("condpay://oracle/b")],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    with pytest.raises(SettlementError) as refused:
        caller_from_auth_context({"x509_pem_cert": [certs.certificate_pem(two.certificate)]})
    assert refused.value.reason is Reason.CALLER_UNKNOWN


@pytest.mark.parametrize(
    "context",
    [{}, {"transport_security_type": [b"insecure"]}, {"peer_uri": []}],
    ids=["empty", "plaintext", "no uris"],
)
def test_no_verified_certificate_is_caller_unknown(context: dict[str, list[bytes]]) -> None:
    with pytest.raises(SettlementError) as refused:
        caller_from_auth_context(context)
    assert refused.value.reason is Reason.CALLER_UNKNOWN


async def test_metadata_identity_only_in_the_plaintext_development_mode() -> None:
    assert isinstance(identity_resolver(insecure=False), CertificateIdentity)
    assert isinstance(identity_resolver(insecure=True), MetadataIdentity)
    async with (
        whoami_server(MetadataIdentity(), None) as dev,
        grpc.aio.insecure_channel(dev.address, options=LOCAL_POOL) as channel,
    ):
        assert await ask(channel, ((CALLER_METADATA_KEY, "auditor/audit-1"),)) == "auditor/audit-1"
    # The certificate resolver on a plaintext server finds no certificate: nobody is anybody.
    async with (
        whoami_server(CertificateIdentity(), None) as wrong,
        grpc.aio.insecure_channel(wrong.address, options=LOCAL_POOL) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask(channel, ((CALLER_METADATA_KEY, "auditor/audit-1"),))
        assert api_error(refused.value).reason == "CALLER_UNKNOWN"


# -- the certificates themselves -----------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_init_layout_and_file_modes(certs_dir: Path) -> None:
    stems = [certs.client_file_stem(certs.parse_identity(i)) for i in certs.DEFAULT_IDENTITIES]
    expected = {"ca.pem", "server.pem", "server.key"}
    expected |= {f"clients/{stem}.{suffix}" for stem in stems for suffix in ("pem", "key")}
    expected |= {"bridge/ca.pem", "bridge/server.pem", "bridge/server.key"}
    expected |= {
        f"bridge/participants/{identity.replace('/', '_')}.{suffix}"
        for identity in certs.DEFAULT_BRIDGE_IDENTITIES
        for suffix in ("pem", "key")
    }
    expected |= {"checkpoint.key", "checkpoint.pub"}  # the journal checkpoints' signing key
    assert _files(certs_dir) == expected  # the CA's private key is not where the server reads
    assert _files(certs_dir.parent / "ca") == {"ca.key"}
    assert _mode(certs_dir.parent / "ca" / "ca.key") == 0o600
    for name in expected:
        assert _mode(certs_dir / name) == (0o600 if name.endswith(".key") else 0o644), name


def _extension(certificate: x509.Certificate, kind: type[ExtensionT]) -> x509.Extension[ExtensionT]:
    return certificate.extensions.get_extension_for_class(kind)


def test_certificate_contents(certs_dir: Path) -> None:
    layout = certs.Layout(certs_dir)
    ca = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(layout.server_certificate.read_bytes())
    caller = Caller(Role.FINANCIER, "bank-a")
    client = x509.load_pem_x509_certificate(layout.client_certificate(caller).read_bytes())
    assert _extension(ca, x509.BasicConstraints).value == x509.BasicConstraints(True, 0)
    assert _extension(ca, x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == certs.CA_VALIDITY
    for leaf in (server, client):
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
        assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == certs.LEAF_VALIDITY
        assert _extension(leaf, x509.BasicConstraints).value.ca is False
        assert _extension(leaf, x509.BasicConstraints).critical
        usage = _extension(leaf, x509.KeyUsage)
        assert usage.critical
        assert usage.value.digital_signature
        assert not usage.value.key_cert_sign
        leaf.verify_directly_issued_by(ca)
    assert list(_extension(server, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(_extension(client, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    server_names = _extension(server, x509.SubjectAlternativeName).value
    assert server_names.get_values_for_type(x509.DNSName) == ["localhost", "condpay.test"]
    assert [str(ip) for ip in server_names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    client_names = _extension(client, x509.SubjectAlternativeName).value
    assert list(client_names) == [x509.UniformResourceIdentifier("condpay://financier/bank-a")]
    common_name = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "financier/bank-a"
    serials = {ca.serial_number, server.serial_number, client.serial_number}
    assert len(serials) == 3
    assert min(serials) > 2**64  # random, up to 159 bits


def test_a_leaf_never_outlives_its_ca(ca: certs.KeyPair) -> None:
    pair = certs.create_client_certificate(
        ca, Caller(Role.AUDITOR, "a"), validity=timedelta(days=100 * 365)
    )
    assert pair.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


# -- the command ---------------------------------------------------------------------------------
async def test_init_refuses_to_overwrite_then_force_replaces_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "certs"
    assert certs.main(["init", "--dir", str(root), "--identity", PLATFORM]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {root / 'ca.pem'}" in printed
    assert f"wrote {root / 'clients' / 'platform_gba-trade.key'}" in printed
    assert "PRIVATE KEY" not in printed
    old_ca = (root / "ca.pem").read_bytes()
    old_files = _files(root)

    assert certs.main(["init", "--dir", str(root), "--identity", "auditor/a"]) == 1
    assert "--force" in capsys.readouterr().err
    assert (root / "ca.pem").read_bytes() == old_ca
    assert _files(root) == old_files

    old_client = tmp_path / "old-client"
    old_client.mkdir()
    for suffix in ("pem", "key"):
        (old_client / f"c.{suffix}").write_bytes(
            (root / f"clients/platform_gba-trade.{suffix}").read_bytes()
        )
    assert certs.main(["init", "--dir", str(root), "--identity", "auditor/a", "--force"]) == 0
    assert (root / "ca.pem").read_bytes() != old_ca
    # Client certificates of the replaced CA are gone; a copy of one is refused by the new server.
    assert sorted(_files(root / "clients")) == ["auditor_a.key", "auditor_a.pem"]
    stale = channel_credentials(root / "ca.pem", old_client / "c.pem", old_client / "c.key")
    async with tls_server(root) as server:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask_with(stale, server.address)
        assert refused.value.code() == Code.UNAVAILABLE
        async with secure_channel(server.address, root, "auditor/a") as channel:
            assert await ask(channel) == "auditor/a"


async def test_issue_adds_a_client_that_works_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "certs"
    assert certs.main(["issue", "oracle/iot.gba-port", "--dir", str(root)]) == 1
    assert "certs init" in capsys.readouterr().err
    assert certs.main(["init", "--dir", str(root)]) == 0
    capsys.readouterr()
    assert certs.main(["issue", "oracle/iot.gba-port", "--dir", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {root / 'clients' / 'oracle_iot.gba-port.pem'}",
        f"wrote {root / 'clients' / 'oracle_iot.gba-port.key'}",
    ]
    assert _mode(root / "clients" / "oracle_iot.gba-port.key") == 0o600
    first = (root / "clients" / "oracle_iot.gba-port.pem").read_bytes()
    assert certs.main(["issue", "oracle/iot.gba-port", "--dir", str(root)]) == 1
    assert (root / "clients" / "oracle_iot.gba-port.pem").read_bytes() == first
    assert certs.main(["issue", "oracle/iot.gba-port", "--dir", str(root), "--force"]) == 0
    async with (
        tls_server(root) as server,
        secure_channel(server.address, root, "oracle/iot.gba-port") as channel,
    ):
        assert await ask(channel) == "oracle/iot.gba-port"


@pytest.mark.parametrize(
    "identity",
    ["king/x", "platform", "platform/", "platform/Upper", "platform/-a", "platform/a b", "/x"],
)
def test_commands_refuse_a_malformed_identity(
    identity: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert certs.main(["init", "--dir", str(tmp_path), "--identity", identity]) == 1
    assert certs.main(["issue", identity, "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("condpay certs:") == 2
    assert not (tmp_path / "ca.pem").exists()


@pytest.mark.parametrize("identity", ["platform/../../etc", "../x/y", "platform/a/b", "x"])
def test_client_identity_files_stay_inside_the_directory(identity: str) -> None:
    with pytest.raises(ValueError, match="<role>/<id>"):
        identity_files("var/certs", identity)


def test_key_files_are_private_even_over_an_existing_readable_file(tmp_path: Path) -> None:
    key_path = tmp_path / "k.key"
    key_path.write_text("old")
    key_path.chmod(0o644)
    pair = certs.create_ca()
    certs.write_pair(pair, tmp_path / "k.pem", key_path)
    assert _mode(key_path) == 0o600
    assert certs.load_pair(tmp_path / "k.pem", key_path).certificate == pair.certificate


@pytest.fixture(autouse=True)
def _no_stray_temporaries(tmp_path: Path) -> Iterator[None]:
    yield
    assert not list(tmp_path.rglob(".*.tmp"))


# -- the server's certificates directory and reflection -------------------------------------------
def test_the_server_refuses_a_certs_dir_holding_the_ca_key(certs_dir: Path, tmp_path: Path) -> None:
    """As `certs init` used to leave it: ca.key beside server.key. The server will not start."""
    from settlement.api.server import require_certificates
    from settlement.config import Settings

    old_layout = tmp_path / "certs"
    old_layout.mkdir()
    for name in ("ca.pem", "server.pem", "server.key"):
        (old_layout / name).write_bytes((certs_dir / name).read_bytes())
    assert require_certificates(Settings(certs_dir=str(old_layout))) is not None
    (old_layout / "ca.key").write_bytes(certs.Layout(certs_dir).ca_key.read_bytes())
    with pytest.raises(SystemExit, match="CA's private key"):
        require_certificates(Settings(certs_dir=str(old_layout)))


async def _reflection_answers(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        return await reflection_listed(channel)


@pytest.mark.parametrize(
    ("insecure", "reflection", "expected"),
    [(False, None, False), (False, True, True), (True, None, True), (True, False, False)],
)
async def test_reflection_is_off_under_mutual_tls_unless_asked(
    certs_dir: Path, tmp_path: Path, insecure: bool, reflection: bool | None, expected: bool
) -> None:
    from settlement.api.server import start_server
    from settlement.config import Settings
    from settlement.runtime import Runtime

    settings = Settings(
        addr="127.0.0.1:0",
        database_url=f"sqlite:///{tmp_path}/condpay.db",
        insecure=insecure,
        certs_dir=str(certs_dir),
        log_calls=False,
        bridge="none",
        reflection=reflection,
    )
    runtime = Runtime(settings)
    await runtime.start()
    server = await start_server(runtime, "127.0.0.1:0")
    try:
        files = identity_files(certs_dir, "auditor/audit-1")
        credentials = (
            None
            if insecure
            else channel_credentials(files.ca_path, files.cert_path, files.key_path)
        )
        assert await _reflection_answers(f"localhost:{server.port}", credentials) is expected
    finally:
        await server.stop(grace_seconds=0)
