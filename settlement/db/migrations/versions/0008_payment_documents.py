"""payment documents: the signed bytes behind each change of a payment, for evidence bundles

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'payment_documents',
        sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('idx', sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('entry_seq', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id']),
        sa.PrimaryKeyConstraint('payment_id', 'version', 'idx'),
    )


def downgrade() -> None:
    op.drop_table('payment_documents')
