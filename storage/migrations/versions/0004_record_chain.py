"""record_chain: the public track record's hash chain, with every signal and outcome already stored chained

Revision ID: 0004
Revises: 0003
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import storage.tables

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if 'record_chain' not in have:  # (a database adopted from before migrations may have it already)
        _create()
    _chain_what_is_there()


def _create() -> None:
    op.create_table('record_chain',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('hash')
    )
    with op.batch_alter_table('record_chain', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_record_chain_signal_id'), ['signal_id'], unique=False)


def _chain_what_is_there() -> None:
    """Chain the signals (issue order) and outcomes (exit order) stored before the chain existed, so that from
    now on every signal in the record must be in the chain; their entries say when they were chained (`at`)."""
    from datetime import datetime, timezone

    from storage import chain
    from storage.rows import to_outcome, to_signal
    from storage.tables import CHAIN, OUTCOMES, SIGNALS

    bind = op.get_bind()
    if bind.execute(sa.select(sa.func.count()).select_from(CHAIN)).scalar():
        return
    signals = [to_signal(r._mapping) for r in bind.execute(sa.select(SIGNALS).order_by(SIGNALS.c.issued_at, SIGNALS.c.id))]
    issued = {s.id for s in signals if not s.shadow}
    outcomes = [to_outcome(r._mapping) for r in bind.execute(
        sa.select(OUTCOMES).order_by(OUTCOMES.c.exit_time, OUTCOMES.c.signal_id))]
    items = [("issue", s.id, chain.issue_payload(s)) for s in signals if s.id in issued]
    items += [("exit", o.signal_id, chain.exit_payload(o)) for o in outcomes if o.signal_id in issued]
    now, prev, rows = datetime.now(timezone.utc), chain.GENESIS, []
    for seq, (kind, sid, payload) in enumerate(items, 1):
        digest = chain.entry_hash(seq, kind, sid, prev, payload)
        rows.append({"seq": seq, "kind": kind, "signal_id": sid, "payload": payload, "prev_hash": prev,
                     "hash": digest, "at": now})
        prev = digest
    for start in range(0, len(rows), 1000):
        bind.execute(sa.insert(CHAIN), rows[start:start + 1000])


def downgrade() -> None:
    with op.batch_alter_table('record_chain', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_chain_signal_id'))

    op.drop_table('record_chain')
