"""Regenerate app/grpc_oip/generated/*_pb2*.py(i) from the .proto beside them: `python -m app.grpc_oip.generate`.

Needs grpcio-tools (the `test` extra). The generated modules are committed, so serving never needs it. protoc
writes `import grpc_predict_v2_pb2` in the gRPC module; it is rewritten as a relative import so the modules work
as a package.
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
    grpc_module = GENERATED / "grpc_predict_v2_pb2_grpc.py"
    text = grpc_module.read_text()
    grpc_module.write_text(text.replace("import grpc_predict_v2_pb2 as", "from . import grpc_predict_v2_pb2 as"))
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(message)s")
    sys.exit(main())
