"""Where recorded-experience chunk bytes live when not in the database: a directory or an object store (fsspec).

By default a chunk's bytes sit in its own `experience_chunks` row (`data`). With EXPERIENCE_URL set, the bytes go to
`<EXPERIENCE_URL>/<key>` and the row keeps only the key (`storage_key`, `data` null): the database stays the index
(which chunks exist, for which model, in which order, with their counts) and the bulk moves to storage that grows
cheaply. Any URL fsspec understands works; the two this project tests are

    file:///var/lib/ddpg/experience          a directory (local disk, or a shared mount for several machines)
    s3://bucket/prefix                       S3 or anything that speaks its API (MinIO, Ceph, R2, moto)

For s3:// the connection comes from the usual AWS settings, read by botocore: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL (or
AWS_ENDPOINT_URL_S3) for a server other than Amazon's; or an instance / pod role.

A chunk is written once under a key that is never reused (its flush id), so a put needs no coordination between
processes and a reader never sees a half-written chunk: the row that names the key is committed only after the put
returned, and a directory put writes a temporary file and renames it.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

# Keys are made by this service (model id / flush id); anything else is refused so that a key can never climb out
# of the configured prefix or be read differently by two backends.
_KEY = re.compile(r"[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*")
# One bulk delete call removes at most this many objects (S3's DeleteObjects limit is 1000).
_DELETE_BATCH = 1000


class ChunkMissingError(LookupError):
    """The key names no stored chunk (deleted by retention, or the storage was changed under the database)."""


class ChunkStorage(Protocol):
    """Bytes by key: what the experience store needs from a place outside the database."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (a new key: chunks are written once)."""

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; ChunkMissingError if there are none."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Remove the keys' bytes; keys already gone are fine (a retention pass may be repeated)."""


def check_key(key: str) -> str:
    """`key` if it is a relative path of plain segments, else ValueError naming it."""
    if not _KEY.fullmatch(key) or any(part in {".", ".."} for part in key.split("/")):
        raise ValueError(f"chunk storage key {key!r} is not a relative path of [A-Za-z0-9_-.] segments")
    return key


class FsspecChunkStorage:
    """Chunks as files under an fsspec URL (file://, s3://, ... see the module docstring)."""

    def __init__(self, url: str) -> None:
        import fsspec  # only the processes that store chunks outside the database pay for the import

        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url)
        self._fs: Any = fs
        self._root: str = root.rstrip("/")
        self._local = "file" in _protocols(fs)
        if self._local:
            fs.makedirs(self._root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self._local:
            self._fs.pipe_file(path, data)  # one PUT: an object is all there or absent
            return
        parent = path.rsplit("/", 1)[0]
        self._fs.makedirs(parent, exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        self._fs.pipe_file(partial, data)
        self._fs.mv(partial, path)

    def get(self, key: str) -> bytes:
        try:
            data: bytes = self._fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise ChunkMissingError(f"no chunk under {key!r} in {self.url}") from None
        return data

    def delete(self, keys: Iterable[str]) -> None:
        paths = [self._path(key) for key in keys]
        for start in range(0, len(paths), _DELETE_BATCH):
            batch = paths[start : start + _DELETE_BATCH]
            try:
                self._fs.rm(batch)
            except FileNotFoundError:
                # Some were gone already: remove the rest one by one (rm of a list stops at the first missing one
                # on some backends).
                for path in batch:
                    try:
                        self._fs.rm_file(path)
                    except FileNotFoundError:
                        continue


def delete_after_commit(storage: ChunkStorage | None, keys: list[str]) -> None:
    """Remove the bytes of chunk rows already deleted (retention, a clear). Called after the commit, so a failure
    here leaves unreferenced objects behind (logged; space, never a wrong read), never a row without its bytes."""
    if storage is None or not keys:
        return
    try:
        storage.delete(keys)
    except Exception as exc:  # storage down: the rows are gone already, so only space is lost
        logger.warning("could not delete %d chunk(s) from %s: %s", len(keys), storage.url, exc)


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


def open_chunk_storage(url: str | None) -> ChunkStorage | None:
    """The storage EXPERIENCE_URL names (one per URL and process), or None when chunks stay in the database."""
    if not url:
        return None
    return _storage_for(url)


@functools.lru_cache(maxsize=4)
def _storage_for(url: str) -> ChunkStorage:
    storage = FsspecChunkStorage(url)
    logger.info("Experience chunks are stored under %s", storage.url)
    return storage
