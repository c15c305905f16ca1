"""Zip archives from uploads, read under caps: entry count, each entry's declared and actual size, and the total.

A zip bomb declares (or hides) a huge uncompressed size; both are refused before memory is spent on them: the
declared sizes are checked from the central directory, and each entry is read with a cap one byte over what it
declared, so an entry that inflates past its declaration is caught by its length (zipfile also checks the CRC).
"""

from __future__ import annotations

import io
import zipfile
import zlib

from models.imports.errors import ImportRefusedError

# Generous for any MLP policy (an SB3 TD3 [400, 300] zip inflates to ~3 MB): far from what a bomb expands to.
MAX_ENTRIES = 256
DEFAULT_MAX_UNCOMPRESSED = 256 * 1024 * 1024


class SafeZip:
    """A zip whose entries are read only through `read`, each under the archive's caps."""

    def __init__(self, data: bytes, *, field: str, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED) -> None:
        self.field = field
        self.max_uncompressed = max_uncompressed
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise ImportRefusedError(field, f"not a readable zip archive ({exc})") from None
        if len(infos) > MAX_ENTRIES:
            raise ImportRefusedError(field, f"the archive has {len(infos)} entries; at most {MAX_ENTRIES} are read")
        declared = sum(info.file_size for info in infos)
        if declared > max_uncompressed:
            raise ImportRefusedError(
                field,
                f"the archive declares {declared} uncompressed bytes, over the limit of {max_uncompressed} "
                "(a zip bomb, or not a policy)",
            )
        self._infos = {info.filename: info for info in infos}
        self._read_total = 0

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def has(self, name: str) -> bool:
        return name in self._infos

    def read(self, name: str) -> bytes:
        """One entry's bytes, refused when it inflates past its declared size or the archive's remaining budget."""
        info = self._infos.get(name)
        if info is None:
            raise ImportRefusedError(self.field, f"the archive has no entry {name!r}")
        if info.flag_bits & 0x1:
            raise ImportRefusedError(self.field, f"entry {name!r} is encrypted")
        budget = min(info.file_size, self.max_uncompressed - self._read_total)
        try:
            with self._zip.open(info) as stream:
                data = stream.read(budget + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ImportRefusedError(self.field, f"entry {name!r} is corrupt or truncated ({exc})") from None
        if len(data) > budget:
            raise ImportRefusedError(
                self.field, f"entry {name!r} inflates past its declared {info.file_size} bytes (a zip bomb)"
            )
        if len(data) != info.file_size:
            raise ImportRefusedError(
                self.field, f"entry {name!r} is truncated: {len(data)} of {info.file_size} declared bytes"
            )
        self._read_total += len(data)
        return data
