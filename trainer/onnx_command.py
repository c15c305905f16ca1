"""`python -m trainer export-onnx ACTOR.safetensors OUT.onnx`: the function behind the subcommand.

Torch-free (the strict loader and models.onnx_export only), so the subcommand answers without loading torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from models.onnx_export import safetensors_to_onnx
from models.weights import WeightsFormatError

logger = logging.getLogger(__name__)


def export_onnx(weights_path: Path, out_path: Path) -> None:
    """Write the ONNX model of the policy file at `weights_path` to `out_path`.

    Raises `models.weights.WeightsFormatError` (naming the file) when the weights are missing or rejected by the
    strict loader, and OSError when `out_path` cannot be written. `out_path` is replaced atomically: it never
    holds a partial model, and a failed export leaves an existing file as it was.
    """
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise WeightsFormatError(f"no such weights file: {weights_path}") from None
    except IsADirectoryError:
        raise WeightsFormatError(f"not a weights file (a directory): {weights_path}") from None
    try:
        model = safetensors_to_onnx(data)
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{weights_path}: {exc}") from None
    _write_atomically(out_path, model)
    logger.info("wrote %s (%d bytes) from %s", out_path, len(model), weights_path)


def _write_atomically(path: Path, data: bytes) -> None:
    # A temporary file in the same directory, then rename: readers see the old file or the whole new one.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
