"""Regenerate the dfst.v1 protobuf and gRPC modules from protos/dfst/v1/*.proto.

Run from anywhere: ``python -m dfst.v1.generate``.  It writes
``dfst/v1/<name>_pb2.py``, ``<name>_pb2.pyi`` and ``<name>_pb2_grpc.py`` next
to this file with grpcio-tools, so the output depends only on the proto files
and the grpcio-tools version.
"""

from __future__ import annotations

import logging
import pathlib
import sys

logger = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "dfst" / "v1"


def proto_files() -> list[pathlib.Path]:
    """Return the proto files of the dfst.v1 package, sorted by name."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: pathlib.Path = REPO_ROOT) -> list[pathlib.Path]:
    """Run protoc on every dfst.v1 proto, writing under ``out_dir/dfst/v1``; return the written files."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {', '.join(sources)}")
    written = sorted((out_dir / "dfst" / "v1").glob("*_pb2*.py*"))
    logger.info("generated %d files under %s", len(written), out_dir / "dfst" / "v1")
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for path in generate():
        print(path)
    sys.exit(0)
