"""Mutual TLS on the server: credentials that demand a client certificate, and who the caller is.

Under TLS the caller is read ONLY from the peer certificate the handshake verified against the
condpay CA: its one SAN URI ``condpay://<role>/<id>`` (settlement/certs.py issues them). The
``condpay-caller`` metadata is never looked at, so a client cannot claim another identity.

What ``context.auth_context()`` holds for a verified client (grpcio 1.85, measured)::

    transport_security_type        [b"ssl"]
    x509_subject                   [b"CN=platform/gba-trade,O=condpay development"]
    x509_common_name               [b"platform/gba-trade"]
    x509_subject_alternative_name  every SAN, DNS, URI and IP alike, as plain strings
    peer_uri                       [b"condpay://platform/gba-trade"]: URI SANs only
    x509_pem_cert                  the verified leaf, PEM
    security_level, ssl_session_reused, ssl_tls_version, ssl_negotiated_key_exchange_group,
    ssl_requested_server_name (when the client sent SNI)

``peer_uri`` is absent when the certificate has no URI SAN. ``x509_subject_alternative_name`` (the
``peer_identity_key``, so also what ``context.peer_identities()`` returns) must not be used: a DNS
SAN spelled ``condpay://...`` would pass for an identity there. The common name is for people.

Handshake failures (no certificate, another CA, expired, not yet valid, a certificate without the
clientAuth purpose) never reach a handler: the client sees UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

import grpc
from cryptography import x509

from settlement.api.identity import Caller, caller_from_metadata, parse_caller
from settlement.errors import Reason, SettlementError

URI_SCHEME: Final = "condpay"
_PREFIX: Final = f"{URI_SCHEME}://"
PEER_URI_KEY: Final = "peer_uri"
PEM_CERT_KEY: Final = "x509_pem_cert"
# Distinct identities are few; the bound keeps hostile certificates from growing it forever.
_CACHE_SIZE_MAX: Final = 10_000


def server_credentials(
    cert_path: str | Path, key_path: str | Path, ca_path: str | Path
) -> grpc.ServerCredentials:
    """TLS server credentials that refuse any client without a certificate from ``ca_path``."""
    credentials: grpc.ServerCredentials = grpc.ssl_server_credentials(
        [(Path(key_path).read_bytes(), Path(cert_path).read_bytes())],
        root_certificates=Path(ca_path).read_bytes(),
        require_client_auth=True,
    )
    return credentials


def _unknown(message: str) -> SettlementError:
    return SettlementError(Reason.CALLER_UNKNOWN, message)


def _uris_from_pem(pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(x509.UniformResourceIdentifier)


def _peer_uris(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The URI SANs of the verified peer certificate (from the PEM if gRPC does not list them)."""
    if PEER_URI_KEY in auth_context:
        return [uri.decode("utf-8", "replace") for uri in auth_context[PEER_URI_KEY]]
    pems = auth_context.get(PEM_CERT_KEY, ())
    if len(pems) != 1:
        raise _unknown("the call carries no verified client certificate (mutual TLS)")
    return _uris_from_pem(pems[0])


def caller_from_uris(uris: Sequence[str]) -> Caller:
    """The one ``condpay://<role>/<id>`` among ``uris``; other schemes are ignored."""
    claims = [uri for uri in uris if uri.partition(":")[0].lower() == URI_SCHEME]
    if len(claims) != 1:
        raise _unknown(
            f"the client certificate must name exactly one condpay identity, it names {len(claims)}"
        )
    (claim,) = claims
    if not claim.startswith(_PREFIX):
        raise _unknown("the client certificate's identity is not condpay://<role>/<id>")
    try:
        return parse_caller(claim.removeprefix(_PREFIX))
    except SettlementError:
        raise _unknown(
            "the client certificate's identity is not condpay://<role>/<id> with a known role"
        ) from None


_known: dict[tuple[str, ...], Caller] = {}


def caller_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Caller:
    """The caller named by the verified peer certificate; CALLER_UNKNOWN unless exactly one."""
    uris = tuple(_peer_uris(auth_context))
    caller = _known.get(uris)
    if caller is None:
        caller = caller_from_uris(uris)
        if len(_known) < _CACHE_SIZE_MAX:
            _known[uris] = caller
    return caller


class IdentityResolver(Protocol):
    """Who is calling, from the transport (never from the request body)."""

    def resolve(self, context: grpc.aio.ServicerContext) -> Caller: ...


class CertificateIdentity:
    """Mutual TLS: the identity in the client certificate; caller metadata is ignored."""

    def resolve(self, context: grpc.aio.ServicerContext) -> Caller:
        return caller_from_auth_context(context.auth_context())


class MetadataIdentity:
    """The plaintext development mode only: the ``condpay-caller`` metadata, unauthenticated."""

    def resolve(self, context: grpc.aio.ServicerContext) -> Caller:
        return caller_from_metadata(context.invocation_metadata())


def identity_resolver(*, insecure: bool) -> IdentityResolver:
    """The resolver for a server: metadata only in the explicit insecure mode."""
    return MetadataIdentity() if insecure else CertificateIdentity()
