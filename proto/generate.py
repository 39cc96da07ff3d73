"""Compile every .proto under proto/condpay (condpay/v1, condpay/bridge/v1) into the committed
Python stubs (``make proto``).

Usage: ``python proto/generate.py [OUT_DIR]`` (default: this folder). tests/test_proto.py runs it
into a temporary folder and checks that the committed stubs are what it produces.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

import generate_services as services
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
SOURCES = sorted((HERE / "condpay").rglob("*.proto"))


def _plugin(name: str) -> str:
    """mypy-protobuf's protoc plugins, from the same environment as this Python."""
    found = Path(sys.executable).parent / name
    if not found.exists():
        raise SystemExit(f"{name} not found beside {sys.executable}: pip install mypy-protobuf")
    return str(found)


def generate(out_dir: Path) -> None:
    well_known = str(files("grpc_tools") / "_proto")
    import google.rpc.status_pb2 as status_pb2  # googleapis-common-protos ships status.proto

    googleapis = str(Path(status_pb2.__file__).resolve().parents[2])
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(HERE)) for p in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    services.write(
        out_dir / "condpay" / "services.py",
        HERE,
        [p for p in SOURCES if p.parent.name == "v1" and p.parent.parent.name == "condpay"],
        [googleapis, well_known],
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
