"""Request builders for inventory loans (InventoryFinanceService, docs/financing.md).

Each builder signs its document once and returns the request: resend the very same request
(same request id, same bytes) after a lost reply and the server answers with the first call's
outcome. Send them with ``client.api.finance.<method>(request)`` or ``client.send(request)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from condpay.ids import loan_id_for
from condpay.v1 import finance_pb2, oracle_pb2, wallet_pb2
from wallets import OwnerKey, bls
from wallets.loan_documents import (
    CollateralStatement,
    LoanDisposal,
    LoanPledge,
    LoanRepayment,
    LoanTerms,
)

Signer = tuple[OwnerKey, str]  # (owner key, wallet id)


def open_loan_request(
    terms: LoanTerms, borrower_key: OwnerKey, financier_key: OwnerKey, *, dry_run: bool = False
) -> finance_pb2.OpenLoanRequest:
    """OpenLoan for ``terms`` (its ``submitter`` sends it), signed by both sides' wallet keys.
    The loan's id is :func:`loan_id_for` ``(terms.submitter, terms.request_id)``."""
    payload = terms.to_bytes()
    LoanTerms.from_bytes(payload)  # refuse to sign what the server would refuse
    return finance_pb2.OpenLoanRequest(
        request_id=terms.request_id,
        dry_run=dry_run,
        payload=payload,
        borrower_signature=borrower_key.sign(payload),
        financier_signature=financier_key.sign(payload),
    )


def repay_request(
    payer: Signer,
    loan_id: str,
    amount_minor: int,
    *,
    submitter: str,
    request_id: str,
    expires_at_us: int,
    release_title_id: str = "",
    release_units: int = 0,
    dry_run: bool = False,
) -> finance_pb2.RepayRequest:
    """The borrower repays ``amount_minor`` and, with ``release_units``, frees that many units
    of the pledged receipt ``release_title_id``."""
    signed = LoanRepayment(
        loan_id=loan_id,
        payer=payer[1],
        amount_minor=amount_minor,
        release_title_id=release_title_id,
        release_units=release_units,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).sign(payer[0])
    return finance_pb2.RepayRequest(
        request_id=request_id,
        dry_run=dry_run,
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )


def pledge_more_request(
    holder: Signer,
    loan_id: str,
    title_id: str,
    *,
    submitter: str,
    request_id: str,
    expires_at_us: int,
    dry_run: bool = False,
) -> finance_pb2.PledgeMoreRequest:
    signed = LoanPledge(
        loan_id=loan_id,
        title_id=title_id,
        holder=holder[1],
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).sign(holder[0])
    return finance_pb2.PledgeMoreRequest(
        request_id=request_id,
        dry_run=dry_run,
        holder_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )


def collateral_request(
    statement: CollateralStatement,
    *,
    request_id: str,
    ed25519: Sequence[tuple[str, OwnerKey]] = (),
    bls_signers: Sequence[tuple[str, int]] = (),
    dry_run: bool = False,
) -> finance_pb2.SubmitCollateralAttestationRequest:
    """A collateral statement signed by Ed25519 oracles ``(oracle_id, key)`` and/or aggregated
    from BLS oracles ``(oracle_id, secret_key)``: a valuation by the loan's price oracle; a stock
    count by its warehouse (Ed25519) and its sensor quorum."""
    message = statement.to_bytes()
    CollateralStatement.from_bytes(message)
    request = finance_pb2.SubmitCollateralAttestationRequest(
        request_id=request_id,
        dry_run=dry_run,
        statement=message,
        signatures=[
            oracle_pb2.SignerSignature(signer_id=signer_id, signature=key.sign(message))
            for signer_id, key in ed25519
        ],
    )
    if bls_signers:
        scheme = bls.backend()
        request.bls_aggregate.CopyFrom(
            oracle_pb2.BlsAggregate(
                signer_ids=[signer_id for signer_id, _ in bls_signers],
                signature=scheme.aggregate([scheme.sign(s, message) for _, s in bls_signers]),
            )
        )
    return request


def disposal_request(
    financier_key: OwnerKey,
    buyer: Signer,
    loan_id: str,
    title_id: str,
    *,
    pay: tuple[str, int],
    receive_minor: int,
    submitter: str,
    request_id: str,
    expires_at_us: int,
    quote_id: str = "",
    dry_run: bool = False,
) -> finance_pb2.DisposeCollateralRequest:
    """The financier sells a defaulted loan's receipt to ``buyer``: ``receive_minor`` of the
    loan's currency arrives, the buyer pays ``pay`` (the same amount in that currency; in
    another, at ``quote_id`` or, without one, at market at most ``pay``)."""
    payload = LoanDisposal(
        loan_id=loan_id,
        title_id=title_id,
        buyer=buyer[1],
        pay_currency=pay[0],
        pay_minor=pay[1],
        receive_minor=receive_minor,
        quote_id=quote_id,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us,
    ).to_bytes()
    return finance_pb2.DisposeCollateralRequest(
        request_id=request_id,
        dry_run=dry_run,
        payload=payload,
        financier_signature=financier_key.sign(payload),
        buyer_signature=buyer[0].sign(payload),
    )


__all__ = [
    "CollateralStatement",
    "LoanTerms",
    "collateral_request",
    "disposal_request",
    "loan_id_for",
    "open_loan_request",
    "pledge_more_request",
    "repay_request",
]
