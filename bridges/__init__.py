"""An mBridge-style multi-CBDC platform mock: a system of its own that the settlement core talks
to through :class:`BridgeApi` (docs/bridge.md).

Central banks (PBoC/CNY, HKMA/HKD, BOT/THB, CBUAE/AED, SAMA/SAR) issue their currencies on a
shared ledger to participating banks; liquidity providers convert between them at quoted rates
with the spread booked as its own posting; cross-currency transfers are prepared (funds
reserved with an expiry), then committed or aborted, idempotently by transfer id; commits are
batched into blocks that are final only with a quorum certificate (>= 2/3 of the central banks'
validators, one aggregated BLS12-381 signature) that :func:`verify_quorum_certificate` checks.

Two ways to run it, one interface: :class:`Bridge` in process, or its own gRPC server
(``python -m bridges serve``) through :class:`BridgeClient`. :class:`FaultyBridge` puts a
:class:`FaultPlan` in front of either. This package never imports the settlement core.
"""

from bridges._api import BridgeAdminApi, BridgeApi
from bridges._bridge import Bridge
from bridges._client import BridgeClient
from bridges._clock import Clock, ManualClock, SystemClock
from bridges._faults import FaultPlan, FaultyBridge, Operation
from bridges._fx import Conversion, convert_source, convert_target, cross_rate
from bridges._identity import Identity, Kind, parse_identity
from bridges._model import (
    CENTRAL_BANKS,
    AccountBalance,
    AccountKind,
    AuditReport,
    BlockHeader,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    ParticipantKind,
    PublishedRate,
    QuorumCertificate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    TransferState,
    TransferTerms,
    ValidatorInfo,
    ValidatorSet,
)
from bridges._pinning import export_validators, load_pinned, validators_json
from bridges._quorum import (
    checked_public_keys,
    header_encoding,
    header_hash,
    quorum_threshold,
    verify_quorum_certificate,
)
from bridges._setup import DEMO_BANK_BALANCE_MINOR, DEMO_BANKS, bootstrap
from bridges._state_lock import StateFileBusy
from bridges._tls import ClientTls, ServerTls, TlsSetupError

__all__ = [
    "CENTRAL_BANKS",
    "DEMO_BANKS",
    "DEMO_BANK_BALANCE_MINOR",
    "AccountBalance",
    "AccountKind",
    "AuditReport",
    "BlockHeader",
    "Bridge",
    "BridgeAdminApi",
    "BridgeApi",
    "BridgeClient",
    "ClientTls",
    "Clock",
    "Conversion",
    "CurrencySupply",
    "FaultPlan",
    "FaultyBridge",
    "Finality",
    "Identity",
    "Issuance",
    "Kind",
    "ManualClock",
    "MarketOrder",
    "Money",
    "Operation",
    "Participant",
    "ParticipantKind",
    "PublishedRate",
    "QuorumCertificate",
    "Quote",
    "Rate",
    "ServerTls",
    "StateFileBusy",
    "SystemClock",
    "TickResult",
    "TlsSetupError",
    "Transfer",
    "TransferState",
    "TransferTerms",
    "ValidatorInfo",
    "ValidatorSet",
    "bootstrap",
    "checked_public_keys",
    "convert_source",
    "convert_target",
    "cross_rate",
    "export_validators",
    "header_encoding",
    "header_hash",
    "load_pinned",
    "parse_identity",
    "quorum_threshold",
    "validators_json",
    "verify_quorum_certificate",
]
