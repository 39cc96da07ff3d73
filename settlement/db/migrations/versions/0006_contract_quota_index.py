"""the contract quota's count searches an index: contracts by registering platform and time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 19:15:00.000000
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('contracts', schema=None) as batch_op:
        batch_op.create_index(
            'ix_contracts_registered_by', ['registered_by', 'registered_at_us'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('contracts', schema=None) as batch_op:
        batch_op.drop_index('ix_contracts_registered_by')
