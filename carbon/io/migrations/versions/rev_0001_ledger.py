"""Revision 0001: the ledger as carbon-sink wrote it before the hash chain (schema version 4 in
``ledger_meta``; ``class_areas`` included).

A ledger written by that code has no ``alembic_version`` table; it is recognised as this
revision. Tables are created only where missing, so running this revision on such a ledger
adds what an older version-4 ledger may lack (``class_areas``) and changes nothing else.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_float = sa.Float(precision=53)
_when = sa.DateTime(timezone=True)

frozen = sa.MetaData()

sa.Table(
    "runs",
    frozen,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("flow_run_id", sa.String(36), nullable=True),
    sa.Column("started_at", _when, nullable=False),
    sa.Column("finished_at", _when, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config_path", sa.Text, nullable=False),
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("n_sites", sa.Integer, nullable=True),
    sa.Column("n_failed", sa.Integer, nullable=True),
    sa.Column("n_skipped", sa.Integer, nullable=True),
)
sa.Table(
    "site_runs",
    frozen,
    sa.Column("site_run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("flow_run_id", sa.String(36), nullable=True),
    sa.Column("site_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", _when, nullable=False),
    sa.Column("input_key", sa.String(64), nullable=True, index=True),
    sa.Column("inputs_json", sa.Text, nullable=True),
    sa.Column("coefficient_set", sa.String(128), nullable=True),
    sa.Column("coefficient_sha256", sa.String(64), nullable=True),
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)
sa.Table(
    "stocks",
    frozen,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("nodata_ha", _float, nullable=False),
    sa.Column("stock_agb_tc", _float, nullable=False),
    sa.Column("stock_bgb_tc", _float, nullable=False),
    sa.Column("stock_deadwood_tc", _float, nullable=False),
    sa.Column("stock_litter_tc", _float, nullable=False),
    sa.Column("stock_soc_tc", _float, nullable=False),
    sa.Column("stock_tc", _float, nullable=False),
    sa.Column("stock_tc_per_ha", _float, nullable=False),
    sa.Column("legend", sa.String(64), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("stock_tc_mean", _float, nullable=False),
    sa.Column("stock_tc_median", _float, nullable=False),
    sa.Column("stock_tc_lower90", _float, nullable=False),
    sa.Column("stock_tc_upper90", _float, nullable=True),
    sa.Column("stock_tc_lower95", _float, nullable=False),
    sa.Column("stock_tc_upper95", _float, nullable=True),
    sa.Column("stock_tc_u90_pct", _float, nullable=True),
    sa.Column("stock_tc_u95_pct", _float, nullable=True),
    sa.Column("stock_tc_u95_pct_approach1", _float, nullable=True),
    sa.Column("uncertainty_method", sa.Text, nullable=False),
)
sa.Table(
    "sinks",
    frozen,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("period_years", sa.Integer, nullable=False),
    sa.Column("is_full_period", sa.Boolean, nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("nodata_ha", _float, nullable=False),
    sa.Column("stock_start_tc", _float, nullable=False),
    sa.Column("stock_end_tc", _float, nullable=False),
    sa.Column("stock_change_tc", _float, nullable=False),
    sa.Column("stock_change_agb_tc", _float, nullable=False),
    sa.Column("stock_change_bgb_tc", _float, nullable=False),
    sa.Column("stock_change_deadwood_tc", _float, nullable=False),
    sa.Column("stock_change_litter_tc", _float, nullable=False),
    sa.Column("stock_change_soc_tc", _float, nullable=False),
    sa.Column("gain_agb_tc", _float, nullable=False),
    sa.Column("loss_agb_tc", _float, nullable=False),
    sa.Column("gain_bgb_tc", _float, nullable=False),
    sa.Column("loss_bgb_tc", _float, nullable=False),
    sa.Column("gain_deadwood_tc", _float, nullable=False),
    sa.Column("loss_deadwood_tc", _float, nullable=False),
    sa.Column("gain_litter_tc", _float, nullable=False),
    sa.Column("loss_litter_tc", _float, nullable=False),
    sa.Column("sink_tco2e", _float, nullable=False),
    sa.Column("annual_sink_tco2e", _float, nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("sink_tco2e_mean", _float, nullable=False),
    sa.Column("sink_tco2e_median", _float, nullable=False),
    sa.Column("sink_tco2e_lower90", _float, nullable=False),
    sa.Column("sink_tco2e_upper90", _float, nullable=True),
    sa.Column("sink_tco2e_lower95", _float, nullable=False),
    sa.Column("sink_tco2e_upper95", _float, nullable=True),
    sa.Column("sink_tco2e_u90_pct", _float, nullable=True),
    sa.Column("sink_tco2e_u95_pct", _float, nullable=True),
    sa.Column("sink_tco2e_u95_pct_approach1", _float, nullable=True),
    sa.Column("conservative_sink_tco2e", _float, nullable=False),
    sa.Column("conservative_rule", sa.String(16), nullable=False),
    sa.Column("uncertainty_method", sa.Text, nullable=False),
)
sa.Table(
    "transitions",
    frozen,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("from_class", sa.String(64), nullable=False),
    sa.Column("to_class", sa.String(64), nullable=False),
    sa.Column("area_ha", _float, nullable=False),
)
sa.Table(
    "file_hashes",
    frozen,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("mtime_ns", sa.BigInteger, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
)
sa.Table(
    "exported_vintages",
    frozen,
    sa.Column("registry", sa.String(16), nullable=False),
    sa.Column("site_id", sa.String(64), nullable=False, index=True),
    sa.Column("vintage_start", sa.String(10), nullable=False),
    sa.Column("vintage_end", sa.String(10), nullable=False),
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False),
    sa.Column("period_start", sa.Integer, nullable=False),
    sa.Column("period_end", sa.Integer, nullable=False),
    sa.Column("issuable_tco2e", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("registry", "site_id", "vintage_start", "vintage_end", "site_run_id", "period_start", "period_end"),
)
sa.Table(
    "class_areas",
    frozen,
    sa.Column("site_run_id", sa.Integer, sa.ForeignKey("site_runs.site_run_id"), nullable=False, index=True),
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    sa.Column("carbon_class", sa.String(64), nullable=False),
    sa.Column("area_ha", _float, nullable=False),
    sa.Column("area_adjusted_ha", _float, nullable=False),
    sa.Column("area_adjusted_ha_lower95", _float, nullable=False),
    sa.Column("area_adjusted_ha_upper95", _float, nullable=False),
    sa.Column("adjusted", sa.Boolean, nullable=False),
    sa.Column("accuracy_sample", sa.Text, nullable=False),
)
sa.Table(
    "ledger_meta",
    frozen,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    frozen.create_all(bind, checkfirst=True)
    meta = frozen.tables["ledger_meta"]
    found = bind.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
    if found is None:
        bind.execute(meta.insert().values(key="schema_version", value="4"))


def downgrade() -> None:
    frozen.drop_all(op.get_bind())
