"""Content hashes of input files, cached in the ledger so that an unchanged mosaic is hashed
once, not at every run.

The cache key is (location, size, version): for a local file its modification time (ns); for an
object on storage (``s3://…``) an integer digest of its ETag, or of its last-modified time when
the store gives no ETag (storage.signature), asked with one HEAD request. An object is only
downloaded (streamed once, never held whole) when its key is not in the cache; threads of one
process asking for the same file at once wait for the first one's hash instead of downloading it
again. A file replaced while it is read (its version changed) is hashed again, so no hash is
cached under a version it does not belong to."""

from __future__ import annotations

import threading

from carbon.errors import InputError
from carbon.io import storage
from carbon.io.ledger import Ledger

_LOCKS: dict[tuple[str, int, int], threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


#: Hashes this process has read from or written to a ledger's cache, by (ledger, location, size,
#: version): a run of thousands of sites asks for the same few rasters' hashes at every site.
_SEEN: dict[tuple[str, str, int, int], str] = {}


def _remember(key: tuple[str, str, int, int], sha256: str) -> None:
    if len(_SEEN) > 4096:
        _SEEN.clear()
    _SEEN[key] = sha256


def _lock(key: tuple[str, int, int]) -> threading.Lock:
    with _LOCKS_LOCK:
        if len(_LOCKS) > 4096:  # forget idle ones (a lock held now stays referenced by its holder)
            for k in [k for k, v in _LOCKS.items() if not v.locked()]:
                del _LOCKS[k]
        return _LOCKS.setdefault(key, threading.Lock())


def cached_sha256(ledger: Ledger, path: str) -> str:
    """The SHA-256 of a file or object, from the ledger's cache when its size and version (local
    modification time; ETag on object storage) are unchanged."""
    for _ in range(3):
        size, version = storage.signature(path)
        seen = (ledger.url, path, size, version)
        known = _SEEN.get(seen)
        if known is None:
            known = ledger.cached_hash(path, size, version)
        if known is not None:
            _remember(seen, known)
            return known
        with _lock((path, size, version)):
            known = ledger.cached_hash(path, size, version)  # another thread may have hashed it meanwhile
            if known is not None:
                return known
            known = storage.sha256(path)
            if storage.signature(path) == (size, version):  # not replaced while it was read
                ledger.store_hash(path, size, version, known)
                _remember(seen, known)
                return known
    raise InputError("the file changes while it is read (three times): it cannot be hashed", path=path)
