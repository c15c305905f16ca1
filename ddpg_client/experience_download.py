"""`python -m ddpg_client experience MODEL --format minari|parquet --out DIR`: a model's recorded experience on disk.

minari: the archive is unpacked into DIR, which then is a Minari datasets directory:

    MINARI_DATASETS_PATH=DIR python -c 'import minari; print(minari.load_dataset("ddpg-service/MODEL/recorded-v0"))'

parquet: DIR/MODEL.parquet, a row per recorded transition.

The download shows a progress bar when tqdm is installed (`pip install "./ddpg_client[experience]"`), and is written
to a temporary file first, so an interrupted download never leaves a half dataset in DIR.
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ddpg_client.clients import PolicyClient

logger = logging.getLogger("ddpg_client")

FORMATS = ("minari", "parquet")


def minari_dataset_id(model: str) -> str:
    """The dataset id the service gives a model's recordings (the directory the archive unpacks to)."""
    return f"ddpg-service/{model}/recorded-v0"


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int | None], None]]:
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety; the download works without it
        yield lambda _received, _total: None
        return
    with tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024) as bar:

        def update(received: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(received - bar.n)

        yield update


def _check_members(archive: tarfile.TarFile) -> None:
    """Refuse an archive that would write outside the target directory or contain anything but files and dirs."""
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise ValueError(f"unsafe archive member {member.name!r}")


def download(client: PolicyClient, model: str, format: str, out: Path, *, progress: bool = True) -> Path:
    """Download the model's recorded experience in `format` into `out`; the dataset's path (see the module doc)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".download-", delete=False) as partial:
        partial_path = Path(partial.name)
        try:
            if progress:
                with _progress_bar(f"{model} {format}") as on_progress:
                    size = client.download_experience(model, partial, format=format, on_progress=on_progress)
            else:
                size = client.download_experience(model, partial, format=format)
        except BaseException:
            partial.close()
            partial_path.unlink(missing_ok=True)
            raise
    logger.info("downloaded %d bytes of %s experience for %s", size, format, model)
    try:
        if format == "parquet":
            target = out / f"{model}.parquet"
            partial_path.replace(target)
            return target
        with tarfile.open(partial_path, mode="r:gz") as archive:
            _check_members(archive)
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later: refuse links, devices, odd modes too
                archive.extractall(out, filter="data")
            else:
                archive.extractall(out)  # every member was checked above
        return out / minari_dataset_id(model)
    finally:
        partial_path.unlink(missing_ok=True)
