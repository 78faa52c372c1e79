"""Alembic's environment for the ledger: migrations run on the connection (and inside the
transaction) that ``carbon.io.ledger`` hands over in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
