"""user_channels.format: a webhook's payload format (v1, ours; seed, the seed's field names)

Revision ID: 0007
Revises: 0006
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if 'format' in {c['name'] for c in sa.inspect(op.get_bind()).get_columns('user_channels')}:  # adopted
        return
    with op.batch_alter_table('user_channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('user_channels', schema=None) as batch_op:
        batch_op.drop_column('format')

