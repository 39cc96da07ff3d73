"""Simulated CBDC wallets: currencies, exact money, e-CNY tiers, owner keys, signed instructions.

Imports no other condpay package.
"""

from wallets.currencies import CURRENCIES, CURRENCY_CODES, INT64_MAX, Currency, is_supported
from wallets.errors import (
    BadSignature,
    InstructionError,
    MalformedInstruction,
    MoneyError,
    UnsupportedCurrency,
    WalletsError,
)
from wallets.instructions import (
    TRANSFER_V1,
    AssignmentInstruction,
    AttestationStatement,
    CancelInstruction,
    Document,
    DvPInstruction,
    FundInstruction,
    LockInstruction,
    PledgeRelease,
    PvPInstruction,
    SignedInstruction,
    TitleIssue,
    TitlePledge,
    TitleSplit,
    TransferInstruction,
    sign_transfer,
)
from wallets.keys import OwnerKey, check_public_key, ed25519_backend, verify
from wallets.money import check_amount, currency, format_amount, format_money, parse_amount
from wallets.tiers import (
    LIMITS,
    PERSONAL_TIERS,
    Limits,
    WalletKind,
    limit_day,
    limits_for,
    valid_tier,
)

__all__ = [
    "CURRENCIES",
    "CURRENCY_CODES",
    "INT64_MAX",
    "LIMITS",
    "PERSONAL_TIERS",
    "TRANSFER_V1",
    "AssignmentInstruction",
    "AttestationStatement",
    "BadSignature",
    "CancelInstruction",
    "Currency",
    "Document",
    "DvPInstruction",
    "FundInstruction",
    "InstructionError",
    "Limits",
    "LockInstruction",
    "MalformedInstruction",
    "MoneyError",
    "OwnerKey",
    "PledgeRelease",
    "PvPInstruction",
    "SignedInstruction",
    "TitleIssue",
    "TitlePledge",
    "TitleSplit",
    "TransferInstruction",
    "UnsupportedCurrency",
    "WalletKind",
    "WalletsError",
    "check_amount",
    "check_public_key",
    "currency",
    "ed25519_backend",
    "format_amount",
    "format_money",
    "is_supported",
    "limit_day",
    "limits_for",
    "parse_amount",
    "sign_transfer",
    "valid_tier",
    "verify",
]
