"""Where an input lives: a local path or a URL on object storage (``s3://bucket/key``, or any
other fsspec protocol: ``gs://``, ``az://``, ``https://``).

A location is a ``str | Path``: a local file is a resolved :class:`Path`, a URL stays the string
it was given (``Path("s3://b/k")`` would collapse it to ``s3:/b/k``). Tables and the sites file
are read through fsspec (s3fs for ``s3://``: credentials and endpoint from botocore's
configuration, e.g. ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``);
rasters are opened by GDAL itself (``/vsis3/``, through rasterio), which reads its own settings
(``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``) and, when they are not set, is
given the ones :func:`gdal_options` derives from ``AWS_ENDPOINT_URL`` around each read
(docs/data-contracts.md, "Inputs on object storage"). Nothing here changes the environment.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from carbon.errors import InputError

Location = str | Path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
#: Bytes read at a time when a file or object is hashed (one ranged GET each on object storage).
HASH_BLOCK = 8 << 20


def is_url(location: Location | None) -> bool:
    """Whether ``location`` is a URL (``s3://bucket/key``, ``gs://…``, ``https://…``), not a
    local path. ``file://`` URLs count as local paths (:func:`location`)."""
    if not isinstance(location, str):
        return False
    m = _SCHEME.match(location)
    return m is not None and m.group(1).lower() != "file"


def location(value: Location) -> Location:
    """A location as the readers take it: a URL as given, a local path as a resolved Path."""
    if is_url(value):
        return str(value)
    text = str(value)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text).resolve()


def resolve(base: Location, value: str | Path) -> Location:
    """``value`` relative to the folder ``base`` (a local folder or a URL prefix); a URL, or an
    absolute local path, is taken as it is (a catalog on S3 may name a local raster)."""
    if is_url(value):
        return str(value)
    if is_url(base):
        text = str(value)
        if text.startswith("/") or text.lower().startswith("file://"):
            return location(text)
        scheme, rest = str(base).split("://", 1)
        bucket, _, prefix = rest.partition("/")
        joined = posixpath.normpath(posixpath.join("/", prefix, text)).lstrip("/")
        return f"{scheme}://{bucket}/{joined}"
    return location(Path(base) / value)


def parent(loc: Location) -> Location:
    """The folder (a local Path) or URL prefix (``s3://bucket/a/``) that holds ``loc``."""
    if is_url(loc):
        text = str(loc)
        return text[: text.rstrip("/").rfind("/") + 1]
    return Path(loc).resolve().parent


def name(loc: Location) -> str:
    """The file name: the last part of a path or URL (without a query)."""
    return posixpath.basename(urlsplit(str(loc)).path.rstrip("/")) if is_url(loc) else Path(loc).name


def stem(loc: Location) -> str:
    """The file name without its last suffix."""
    base = name(loc)
    return base.rsplit(".", 1)[0] if "." in base[1:] else base


def suffix(loc: Location) -> str:
    base = name(loc)
    return "." + base.rsplit(".", 1)[1] if "." in base[1:] else ""


class MissingInput(InputError):
    """An input that does not exist (a local file, or an object or bucket on storage)."""


def _fs(url: str) -> tuple[Any, str]:
    """The fsspec file system of a URL and the object's path in it (fsspec keeps one instance
    per protocol and options, so connections are reused)."""
    import fsspec  # noqa: PLC0415 - only inputs on object storage need it (start-up time)

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package is missing
        raise InputError(f"cannot read this URL: {exc}", path=url) from None


def _remote_error(exc: BaseException, what: str, url: str) -> InputError:
    """One line naming the URL, for any failure of the object store (no such bucket, denied,
    unreachable endpoint)."""
    if isinstance(exc, FileNotFoundError):
        return MissingInput(f"{what} not found", path=url)
    if isinstance(exc, PermissionError):
        return InputError(f"{what} cannot be read (access denied: check the credentials)", path=url)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{what} cannot be read from object storage ({type(exc).__name__}: {text})", path=url)


def info(url: str, what: str = "file") -> dict[str, Any]:
    """The object's metadata as fsspec gives it, fresh from the store (its listing cache is
    dropped first): ``size``, and ``ETag``/``LastModified`` on S3. A missing object raises
    an InputError naming the URL."""
    fs, path = _fs(url)
    fs.invalidate_cache(path)
    try:
        meta = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp raise many kinds: one line naming the URL
        raise _remote_error(exc, what, url) from None
    if meta.get("type") == "directory":
        raise MissingInput(f"{what} not found (the URL is a folder, not a file)", path=url)
    return dict(meta)


def is_file(loc: Location) -> bool:
    """Whether ``loc`` is an existing file (object). A store that cannot be asked (no such
    bucket, denied, unreachable) raises an InputError naming the URL."""
    if not is_url(loc):
        return Path(loc).is_file()
    try:
        info(str(loc))
    except MissingInput:
        return False
    return True


def missing(locations: Iterable[Location]) -> set[Location]:
    """The locations that are not existing files. URLs are checked one listing per folder
    (a catalog of a thousand tiles costs a few LIST requests, not a thousand HEADs)."""
    out: set[Location] = set()
    urls: dict[str, list[str]] = {}
    for loc in locations:
        if is_url(loc):
            urls.setdefault(str(parent(loc)), []).append(str(loc))
        elif not Path(loc).is_file():
            out.add(loc)
    for folder, members in urls.items():
        fs, path = _fs(folder)
        fs.invalidate_cache(path)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            entries = []
        except Exception:  # noqa: BLE001 - a store that cannot list: ask for each object
            out.update(u for u in members if not is_file(u))
            continue
        listed = {str(m["name"]).rstrip("/") for m in entries if m.get("type") != "directory"}
        for url in members:
            if _fs(url)[1] not in listed:
                out.add(url)
    return out


_SIGNATURES: dict[str, tuple[float, tuple[int, int]]] = {}
_SIGNATURES_LOCK = threading.Lock()


def signature(loc: Location, *, max_age: float = 0.0, what: str = "file") -> tuple[int, int]:
    """(size, version) of a file: for a local file its modification time (ns); for an object
    an integer digest of its ETag (its content's identity on S3) or, without one, of its
    last-modified time. The hash cache is keyed on (location, size, version). ``max_age``
    (seconds): an object's signature asked for that recently is not asked for again. A missing
    object raises :class:`MissingInput`, any other failure an InputError, naming ``what``."""
    if not is_url(loc):
        st = Path(loc).stat()
        return st.st_size, st.st_mtime_ns
    url = str(loc)
    if max_age > 0:
        with _SIGNATURES_LOCK:
            seen = _SIGNATURES.get(url)
        if seen is not None and time.monotonic() - seen[0] < max_age:
            return seen[1]
    sig = _signature(url, what)
    with _SIGNATURES_LOCK:
        if len(_SIGNATURES) > 1024:
            _SIGNATURES.clear()
        _SIGNATURES[url] = (time.monotonic(), sig)
    return sig


def _signature(url: str, what: str) -> tuple[int, int]:
    meta = info(url, what)
    tag = next((str(meta[k]) for k in ("ETag", "etag", "md5Hash", "content_md5") if meta.get(k)), None)
    if tag is None:
        stamp = next((meta[k] for k in ("LastModified", "last_modified", "mtime", "updated", "created")
                      if meta.get(k) is not None), None)
        if stamp is None:
            raise InputError("object storage gives neither an ETag nor a modification time for this object: its "
                             "hash cannot be cached", path=url)
        tag = f"modified:{stamp.isoformat() if hasattr(stamp, 'isoformat') else stamp}"
    return int(meta.get("size") or 0), version_number(tag)


def version_number(tag: str) -> int:
    """A non-negative 63-bit integer standing for an object's version (its ETag), as the hash
    cache's ``mtime_ns`` column holds it."""
    return int(hashlib.sha256(tag.strip().encode()).hexdigest()[:15], 16)


def open_input(loc: Location, what: str = "file") -> IO[bytes]:
    """A local file or an object, opened for reading bytes. A missing object raises an
    InputError naming the URL."""
    if not is_url(loc):
        return open(loc, "rb")  # the caller closes it
    fs, path = _fs(str(loc))
    try:
        return fs.open(path, "rb", block_size=HASH_BLOCK, cache_type="none")
    except Exception as exc:  # noqa: BLE001 - one line naming the URL
        raise _remote_error(exc, what, str(loc)) from None


def read_bytes(loc: Location, what: str = "file") -> bytes:
    """The whole content of a (small) input: a table, a sites file."""
    if not is_url(loc):
        return Path(loc).read_bytes()
    fs, path = _fs(str(loc))
    try:
        return bytes(fs.cat_file(path))
    except Exception as exc:  # noqa: BLE001 - one line naming the URL
        raise _remote_error(exc, what, str(loc)) from None


def sha256(loc: Location) -> str:
    """The SHA-256 of a file or object, streamed in blocks (an object is downloaded once, in
    ranged GETs of ``HASH_BLOCK`` bytes, never held whole in memory)."""
    h = hashlib.sha256()
    try:
        with open_input(loc) as f:
            for chunk in iter(lambda: f.read(HASH_BLOCK), b""):
                h.update(chunk)
    except InputError:
        raise
    except OSError as exc:
        if not is_url(loc):
            raise
        raise _remote_error(exc, "file", str(loc)) from None
    return h.hexdigest()


def gdal_options() -> dict[str, str]:
    """GDAL settings for ``/vsis3/`` derived from botocore's endpoint variables
    (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``) when GDAL's own (``AWS_S3_ENDPOINT``)
    are not set, so that one variable points GDAL and s3fs at the same S3-compatible store.
    Given to ``rasterio.Env`` around reads; the environment itself is never changed."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url or os.environ.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urlsplit(url if "://" in url else f"https://{url}")
    options = {"AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/")}
    if "AWS_HTTPS" not in os.environ:
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
    if "AWS_VIRTUAL_HOSTING" not in os.environ:
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style URLs, as S3-compatible servers expect
    return options
