"""Who calls the bridge: a participant identity ``<kind>/<id>``, read from the transport only.

Under mutual TLS the identity is the one SAN URI ``condpay-bridge://<kind>/<id>`` of the client
certificate the handshake verified against the bridge's CA (``condpay certs issue-bridge`` makes
them; this module parses them with ``cryptography``, never with the settlement core). In the
plaintext development mode (``serve --insecure``) it is the ``condpay-bridge-participant``
metadata, one identity per call, unauthenticated.

Kinds: ``bank`` (a commercial bank, or the settlement core's gateway), ``liquidity_provider``,
``central_bank`` (its id is the central bank's: PBoC, HKMA, BOT, CBUAE, SAMA), ``operator``
(registers participants, runs the block timer) and ``auditor`` (reads everything, moves nothing).
"""

from __future__ import annotations

import contextvars
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from bridges.errors import Reason, error

URI_SCHEME: Final = "condpay-bridge"
URI_PREFIX: Final = f"{URI_SCHEME}://"
METADATA_KEY: Final = "condpay-bridge-participant"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Kind(enum.Enum):
    BANK = "bank"
    LIQUIDITY_PROVIDER = "liquidity_provider"
    CENTRAL_BANK = "central_bank"
    OPERATOR = "operator"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Identity:
    """One participant of the bridge network, as the transport proved (or, in the development
    mode, claimed) it."""

    kind: Kind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.id}"

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self}"


def parse_identity(text: str) -> Identity:
    """``<kind>/<id>``; ValueError otherwise."""
    kind_text, slash, participant_id = text.partition("/")
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise ValueError(
            f"{text!r}: the kind is not one of {', '.join(k.value for k in Kind)}"
        ) from None
    if not slash or not _ID.match(participant_id):
        raise ValueError(f"{text!r}: not <kind>/<id> with an id of letters, digits, . _ -")
    return Identity(kind, participant_id)


def _missing(message: str) -> Exception:
    return error(Reason.IDENTITY_MISSING, message)


def identity_from_uris(uris: Sequence[str]) -> Identity:
    """The one ``condpay-bridge://<kind>/<id>`` among ``uris``; other schemes are ignored (a
    core certificate ``condpay://...`` is no bridge identity)."""
    claims = [uri for uri in uris if uri.partition(":")[0].lower() == URI_SCHEME]
    if len(claims) != 1 or not claims[0].startswith(URI_PREFIX):
        raise _missing(
            f"the client certificate must name exactly one {URI_PREFIX}<kind>/<id> identity"
        )
    try:
        return parse_identity(claims[0].removeprefix(URI_PREFIX))
    except ValueError:
        raise _missing(
            f"the client certificate's identity is not {URI_PREFIX}<kind>/<id> with a known kind"
        ) from None


def uris_from_pem(pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(names.value.get_values_for_type(x509.UniformResourceIdentifier))


def identity_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
    """The participant named by the verified peer certificate (``peer_uri`` lists URI SANs only;
    ``x509_subject_alternative_name`` is never used: a DNS SAN could spell a URI there)."""
    if "peer_uri" in auth_context:
        uris = [uri.decode("utf-8", "replace") for uri in auth_context["peer_uri"]]
    else:
        pems = auth_context.get("x509_pem_cert", ())
        if len(pems) != 1:
            raise _missing("the call carries no verified client certificate (mutual TLS)")
        uris = uris_from_pem(pems[0])
    return identity_from_uris(uris)


def identity_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> Identity:
    """The development mode only: exactly one ``condpay-bridge-participant`` entry."""
    values = [value for key, value in metadata or () if key == METADATA_KEY]
    if len(values) != 1 or not isinstance(values[0], str):
        raise _missing(f"the call must carry exactly one {METADATA_KEY} metadata entry")
    try:
        return parse_identity(values[0])
    except ValueError as exc:
        raise _missing(str(exc)) from None


#: The participant on whose behalf the current call runs (the gRPC server sets it per call). The
#: in-process bridge binds a quote to it and checks it at prepare; unset in process, where the
#: caller is the process itself (the settlement core with its in-process bridge).
CURRENT: Final[contextvars.ContextVar[Identity | None]] = contextvars.ContextVar(
    "condpay_bridge_participant", default=None
)
