"""Regenerate app/grpc_oip/generated/*_pb2*.py(i) from the .proto beside them: `python -m app.grpc_oip.generate`.

Needs grpcio-tools (the `test` extra). The generated modules are committed, so serving never needs it; they require
grpcio and protobuf at least as new as the grpcio-tools that made them (the floors in pyproject.toml: raise them when
regenerating with a newer one). Two edits
follow protoc:
- the gRPC module's `import grpc_predict_v2_pb2` becomes a relative import, so the modules work as a package;
- the messages go into a descriptor pool of their own instead of protobuf's default one. Every copy of this protocol
  (tritonclient's, KServe's) declares the same `inference.*` names, and two of them in one default pool refuse to
  load ("duplicate symbol"), so a process that imports the service and such a client (a test, an embedding
  application) would fail. The wire format does not depend on the pool.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

GENERATED = Path(__file__).resolve().parent / "generated"
PROTO = "grpc_predict_v2.proto"

logger = logging.getLogger(__name__)


def main() -> int:
    from grpc_tools import protoc  # the test extra's; imported here so that importing this module needs nothing

    arguments = [
        "grpc_tools.protoc",
        f"--proto_path={GENERATED}",
        f"--python_out={GENERATED}",
        f"--pyi_out={GENERATED}",
        f"--grpc_python_out={GENERATED}",
        str(GENERATED / PROTO),
    ]
    status: int = protoc.main(arguments)
    if status != 0:
        logger.error("protoc failed with status %s", status)
        return status
    _edit(
        GENERATED / "grpc_predict_v2_pb2_grpc.py",
        "import grpc_predict_v2_pb2 as",
        "from . import grpc_predict_v2_pb2 as",
    )
    _edit(
        GENERATED / "grpc_predict_v2_pb2.py",
        "_descriptor_pool.Default().AddSerializedFile(",
        "_POOL.AddSerializedFile(",
    )
    _edit(
        GENERATED / "grpc_predict_v2_pb2.py",
        "\nDESCRIPTOR = ",
        "\n_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = ",
    )
    return 0


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise RuntimeError(f"{path.name}: expected {old!r} once in protoc's output; has its output changed?")
    path.write_text(text.replace(old, new))


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(message)s")
    sys.exit(main())
