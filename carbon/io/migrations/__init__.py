"""The ledger's migrations (Alembic): ``env.py`` and one file per revision in ``versions/``.

They ship in the wheel with the package; ``carbon.io.ledger`` runs them on the ledger's own
connection (a new ledger is created by running them all; ``carbon-sink ledger upgrade``
brings an older one to the head). Revisions are written by hand and never edited once
released: each freezes the schema it creates.
"""
