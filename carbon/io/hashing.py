"""Content hashes of input files, cached in the ledger by (path, size, modification time), so
that an unchanged mosaic is hashed once, not at every run."""

from __future__ import annotations

from pathlib import Path

from carbon.io.ledger import Ledger
from carbon.io.tables import sha256_file


def cached_sha256(ledger: Ledger, path: str) -> str:
    """The SHA-256 of a file, from the ledger's cache when its size and time are unchanged."""
    st = Path(path).stat()
    known = ledger.cached_hash(path, st.st_size, st.st_mtime_ns)
    if known is None:
        known = sha256_file(path)
        ledger.store_hash(path, st.st_size, st.st_mtime_ns, known)
    return known
