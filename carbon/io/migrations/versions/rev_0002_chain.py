"""Revision 0002: the hash chain and the liveness of runs.

* ``ledger_chain``: one record per published site run, run closing and export, each hashed
  with the one before it (``carbon.io.ledger``); the records already in the ledger are chained
  here, in order: site runs, closed runs, then each registry's exported vintages.
* ``runs.host``, ``runs.pid``, ``runs.heartbeat_at``: where a run's process lives and its last
  sign of life, so that a run killed mid-way can be told from one still running.
* ``ledger_meta.schema_version`` 4 -> 5: a carbon-sink from before the revisions refuses the
  upgraded ledger instead of writing to it around the chain.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from carbon.io.ledger import rebuild_chain

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("host", sa.String(255), nullable=True))
    op.add_column("runs", sa.Column("pid", sa.Integer, nullable=True))
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "ledger_chain",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("site_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_ledger_chain_kind_ref", "ledger_chain", ["kind", "ref"])
    op.execute("UPDATE ledger_meta SET value = '5' WHERE key = 'schema_version'")
    rebuild_chain(op.get_bind())


def downgrade() -> None:
    op.execute("UPDATE ledger_meta SET value = '4' WHERE key = 'schema_version'")
    op.drop_index("ix_ledger_chain_kind_ref", table_name="ledger_chain")
    op.drop_table("ledger_chain")
    for column in ("heartbeat_at", "pid", "host"):
        op.drop_column("runs", column)
