"""signed journal checkpoints: the head hash and Merkle root of the first seq entries

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'journal_checkpoints',
        sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('head_hash', sa.LargeBinary(), nullable=False),
        sa.Column('tree_root', sa.LargeBinary(), nullable=False),
        sa.Column('frontier', sa.LargeBinary(), nullable=False),
        sa.Column('signed_at_us', sa.BigInteger(), nullable=False),
        sa.Column('public_key', sa.LargeBinary(), nullable=False),
        sa.Column('signature', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('seq'),
    )


def downgrade() -> None:
    op.drop_table('journal_checkpoints')
