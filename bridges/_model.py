"""The bridge's value types: what every call takes and returns, on both transports.

All immutable; money is always ``Money(currency, amount_minor)`` with an int count of minor units.
Times are Unix microseconds (UTC) on the bridge's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wallets.currencies import CURRENCIES


@dataclass(frozen=True, slots=True)
class Money:
    currency: str
    amount_minor: int

    def __str__(self) -> str:
        return f"{self.amount_minor} {self.currency} minor units"


class ParticipantKind(enum.Enum):
    CENTRAL_BANK = "CENTRAL_BANK"
    BANK = "BANK"


class AccountKind(enum.Enum):
    #: A central bank's contra account for its own currency: minus what it has outstanding. The
    #: only account that may go negative (so issuance is a balanced posting, too).
    ISSUANCE = "ISSUANCE"
    #: A bank's account: pays and receives transfers.
    SETTLEMENT = "SETTLEMENT"
    #: A liquidity provider's inventory for conversions.
    LIQUIDITY = "LIQUIDITY"
    #: A liquidity provider's spread income (the spread is its own posting).
    SPREAD = "SPREAD"


class TransferState(enum.Enum):
    """pending -> posted | voided | expired, as TigerBeetle's two-phase transfers; plus REJECTED,
    a prepare that was refused and is remembered so that its retries are refused alike."""

    PREPARED = "PREPARED"
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"

    @property
    def final(self) -> bool:
        """No call can change a transfer in this state."""
        return self is not TransferState.PREPARED


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    kind: ParticipantKind
    name: str
    #: A central bank's currency; "" for banks.
    currency: str = ""
    liquidity_provider: bool = False
    spread_ppm: int = 0
    #: True when the call that returned this changed nothing.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Rate:
    """An exact positive rational: numerator / denominator (reduced)."""

    numerator: int
    denominator: int


@dataclass(frozen=True, slots=True)
class PublishedRate:
    currency: str
    #: Reference units per minor unit of ``currency``. Cross rates are ratios of these, so every
    #: loop of conversions multiplies out to exactly 1 before rounding (docs/bridge.md).
    value: Rate
    published_at_us: int


@dataclass(frozen=True, slots=True)
class MarketOrder:
    """What a quote is asked for: exactly one of the two amounts (the source one is paid spread
    included, the target one arrives); no provider: the one with the lowest spread."""

    source_currency: str
    target_currency: str
    source_amount_minor: int | None = None
    target_amount_minor: int | None = None
    liquidity_provider_id: str = ""


@dataclass(frozen=True, slots=True)
class Quote:
    quote_id: str
    liquidity_provider_id: str
    #: What the payer pays, spread included.
    source: Money
    #: What the payee receives.
    target: Money
    #: The provider's spread in the source currency (booked as its own posting).
    spread: Money
    #: Target minor units per source minor unit, before the spread.
    rate: Rate
    spread_ppm: int
    created_at_us: int
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class TransferTerms:
    quote_id: str
    payer_id: str
    payee_id: str
    liquidity_provider_id: str
    source: Money
    target: Money
    spread: Money
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    state: TransferState
    #: None for a tombstone: an abort that arrived before any prepare.
    terms: TransferTerms | None
    prepared_at_us: int = 0
    expires_at_us: int = 0
    resolved_at_us: int = 0
    #: For REJECTED: the Reason code the prepare was refused with.
    rejection_reason: str = ""
    #: The block that holds the commit; 0 while it waits for one.
    block_height: int = 0
    #: True when this answers a retry: the call changed nothing.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ValidatorInfo:
    validator_id: str
    public_key: bytes
    proof_of_possession: bytes
    online: bool = True


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    validators: tuple[ValidatorInfo, ...]
    #: Signatures a quorum certificate needs: the least k with 3k >= 2n.
    threshold: int

    @property
    def public_keys(self) -> dict[str, bytes]:
        """validator id -> public key, unchecked: see bridges.checked_public_keys."""
        return {v.validator_id: v.public_key for v in self.validators}


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str
    height: int
    previous_hash: bytes
    sealed_at_us: int
    transfer_ids: tuple[str, ...]
    transfers_digest: bytes

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding (bridges/_quorum.py): what the validators sign."""
        from bridges._quorum import header_hash  # the encoding lives with the verification

        return header_hash(self)


@dataclass(frozen=True, slots=True)
class QuorumCertificate:
    block_hash: bytes
    #: Distinct validator ids, sorted.
    signer_ids: tuple[str, ...]
    aggregate_signature: bytes


@dataclass(frozen=True, slots=True)
class Finality:
    transfer_id: str
    #: None while the commit waits for a block.
    block: BlockHeader | None
    #: None while the block lacks a quorum: committed, not final.
    certificate: QuorumCertificate | None

    @property
    def final(self) -> bool:
        return self.block is not None and self.certificate is not None


@dataclass(frozen=True, slots=True)
class AccountBalance:
    participant_id: str
    kind: AccountKind
    currency: str
    balance_minor: int
    reserved_minor: int

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.reserved_minor


@dataclass(frozen=True, slots=True)
class Issuance:
    """The answer to an issue or a redemption: the account right after it."""

    request_id: str
    account: AccountBalance
    #: True when this answers a retry (the original answer, nothing changed).
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CurrencySupply:
    currency: str
    issued_minor: int
    redeemed_minor: int
    #: The sum of all non-issuance balances; the ledger keeps it equal to issued - redeemed.
    held_minor: int
    #: Of that, held by prepared transfers.
    reserved_minor: int

    @property
    def outstanding_minor(self) -> int:
        return self.issued_minor - self.redeemed_minor


@dataclass(frozen=True, slots=True)
class AuditReport:
    supply: tuple[CurrencySupply, ...]
    #: Empty when every invariant holds.
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class TickResult:
    expired_count: int
    tip_height: int
    final_height: int


CENTRAL_BANKS: dict[str, str] = {c.central_bank: c.code for c in CURRENCIES.values()}
"""The participating central banks and the currency each issues: PBoC/CNY, HKMA/HKD, BOT/THB,
CBUAE/AED, SAMA/SAR. Each runs one validator (its id is the central bank's id)."""

CENTRAL_BANK_NAMES: dict[str, str] = {
    "BOT": "Bank of Thailand",
    "CBUAE": "Central Bank of the UAE",
    "HKMA": "Hong Kong Monetary Authority",
    "PBoC": "People's Bank of China",
    "SAMA": "Saudi Central Bank",
}
