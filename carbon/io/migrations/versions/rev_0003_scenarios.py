"""Revision 0003: analysts' scenarios beside the official estimate.

* ``site_runs.scenario``: NULL for the official estimate (what the configuration gives the
  site), else the scenario's name; a scenario is never the current official estimate.
* ``site_runs.parameters_json``: the parameters the site run was computed with (map years,
  period start, method, coefficient set), as given.

Existing site runs are official (NULL): their chained records are unchanged, since a record
leaves out these two fields while they are NULL (``carbon.io.ledger``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("site_runs", sa.Column("scenario", sa.String(200), nullable=True))
    op.add_column("site_runs", sa.Column("parameters_json", sa.Text, nullable=True))
    op.create_index("ix_site_runs_scenario", "site_runs", ["scenario"])


def downgrade() -> None:
    op.drop_index("ix_site_runs_scenario", table_name="site_runs")
    with op.batch_alter_table("site_runs") as batch:
        batch.drop_column("parameters_json")
        batch.drop_column("scenario")
