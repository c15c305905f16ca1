"""The one error every importer raises: the file is refused, and the message names the part of it at fault."""

from __future__ import annotations


class ImportRefusedError(ValueError):
    """An uploaded policy is refused; `field` names what is wrong (`file`, `file.policy.pth`, `obs_normalization`,
    `spaces`...) and the message says why, in terms the uploader can act on."""

    def __init__(self, field: str, message: str, *, unsupported: tuple[str, ...] = ()) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        # ONNX operators (or other named parts) the importer does not support, for clients to show.
        self.unsupported = unsupported
