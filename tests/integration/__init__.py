"""Integration tests: whole sites, flows on a Prefect test server, the CLI, the ledger, the registry export,
reports and real third-party data."""
