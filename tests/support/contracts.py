"""Small contracts for tests that need a payment to lock and nothing else of the trade world."""

from __future__ import annotations


def receipt_contract(name: str) -> str:
    """A contract named ``name``: the buyer's price held until the buyer signs the receipt,
    refunded at a deadline far in the future (whatever day the suite runs)."""
    return f"""contract "{name}" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY

escrow price from buyer
deadline 2099-12-31T00:00:00+08:00 -> refund remainder to buyer

clause receipt
when receipt.signed(signer == buyer) by buyer
  -> pay remainder to seller
"""
