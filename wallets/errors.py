"""Errors raised by the wallets package.

    WalletsError
    ├── MoneyError               a decimal string or amount that is not valid money
    │   └── UnsupportedCurrency  a currency code condpay does not settle
    └── InstructionError         a signed instruction that cannot be decoded or verified
        ├── MalformedInstruction   bytes that are not a canonical instruction of a known version
        └── BadSignature           a signature that does not verify over the transmitted bytes

Each carries a stable ``reason`` (UPPER_SNAKE) that the API maps to a gRPC status.
"""

from __future__ import annotations


class WalletsError(Exception):
    reason = "WALLETS_ERROR"


class MoneyError(WalletsError, ValueError):
    reason = "INVALID_AMOUNT"


class UnsupportedCurrency(MoneyError):
    reason = "UNSUPPORTED_CURRENCY"

    def __init__(self, code: str) -> None:
        super().__init__(f"currency {code!r} is not supported")
        self.code = code


class InstructionError(WalletsError):
    reason = "INSTRUCTION_INVALID"


class MalformedInstruction(InstructionError):
    reason = "INSTRUCTION_MALFORMED"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BadSignature(InstructionError):
    reason = "SIGNATURE_INVALID"
