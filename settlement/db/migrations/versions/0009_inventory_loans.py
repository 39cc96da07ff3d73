"""inventory loans on warehouse receipts, their history, and the sale of a defaulted loan's
collateral (settlements.origin_loan_id)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    money = [
        'principal_minor',
        'principal_outstanding_minor',
        'fee_minor',
        'fee_outstanding_minor',
        'rate_bps',
        'interest_outstanding_minor',
        'interest_remainder',
        'accrued_at_us',
        'repaid_minor',
        'recovered_minor',
        'surplus_minor',
        'maturity_at_us',
        'unit_price_minor',
        'price_observed_at_us',
        'haircut_bps',
        'margin_call_bps',
        'cure_period_s',
    ]
    op.create_table(
        'loans',
        sa.Column('loan_id', _TEXT(), nullable=False),
        sa.Column('opened_by', _TEXT(), nullable=False),
        sa.Column('request_id', _TEXT(), nullable=False),
        sa.Column('borrower_wallet_id', _TEXT(), nullable=False),
        sa.Column('financier_wallet_id', _TEXT(), nullable=False),
        sa.Column('borrower_agent', _TEXT(), nullable=False),
        sa.Column('financier_agent', _TEXT(), nullable=False),
        sa.Column('currency', _TEXT(), nullable=False),
        *[sa.Column(name, sa.BigInteger(), nullable=False) for name in money],
        sa.Column('price_oracle_id', _TEXT(), nullable=False),
        sa.Column('warehouse_oracle_id', _TEXT(), nullable=False),
        sa.Column('sensor_oracle_ids', _TEXT(), nullable=False),
        sa.Column('sensor_threshold', sa.BigInteger(), nullable=False),
        sa.Column('disposal', _TEXT(), nullable=False),
        sa.Column('collateral_json', _TEXT(), nullable=False),
        sa.Column('state', _TEXT(), nullable=False),
        sa.Column('cure_by_us', sa.BigInteger(), nullable=False),
        sa.Column('deadline_at_us', sa.BigInteger(), nullable=True),
        sa.Column('terminal_reason', _TEXT(), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('updated_at_us', sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            'principal_outstanding_minor >= 0 AND fee_outstanding_minor >= 0 '
            'AND interest_outstanding_minor >= 0',
            name='ck_loans_outstanding',
        ),
        sa.PrimaryKeyConstraint('loan_id'),
    )
    op.create_index('ix_loans_deadline', 'loans', ['deadline_at_us'])
    op.create_index('ix_loans_borrower', 'loans', ['borrower_wallet_id', 'loan_id'])
    op.create_index('ix_loans_financier', 'loans', ['financier_wallet_id', 'loan_id'])
    op.create_table(
        'loan_events',
        sa.Column('loan_id', _TEXT(), nullable=False),
        sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('kind', _TEXT(), nullable=False),
        sa.Column('event_id', _TEXT(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('title_id', _TEXT(), nullable=False),
        sa.Column('units', sa.BigInteger(), nullable=False),
        sa.Column('detail', _TEXT(), nullable=False),
        sa.Column('request_id', _TEXT(), nullable=False),
        sa.Column('at_us', sa.BigInteger(), nullable=False),
        sa.Column('by', _TEXT(), nullable=False),
        sa.ForeignKeyConstraint(['loan_id'], ['loans.loan_id']),
        sa.PrimaryKeyConstraint('loan_id', 'seq'),
    )
    op.create_index(
        'ux_loan_events_event_id',
        'loan_events',
        ['loan_id', 'event_id'],
        unique=True,
        sqlite_where=sa.text("event_id != ''"),
        postgresql_where=sa.text("event_id != ''"),
    )
    with op.batch_alter_table('settlements') as batch:
        batch.add_column(
            sa.Column('origin_loan_id', _TEXT(), nullable=False, server_default='')
        )
        batch.add_column(
            sa.Column('surplus_wallet_id', _TEXT(), nullable=False, server_default='')
        )


def downgrade() -> None:
    with op.batch_alter_table('settlements') as batch:
        batch.drop_column('surplus_wallet_id')
        batch.drop_column('origin_loan_id')
    op.drop_index('ux_loan_events_event_id', table_name='loan_events')
    op.drop_table('loan_events')
    op.drop_index('ix_loans_financier', table_name='loans')
    op.drop_index('ix_loans_borrower', table_name='loans')
    op.drop_index('ix_loans_deadline', table_name='loans')
    op.drop_table('loans')
