"""The wire formats' schemas (proto/) compiled by Google's protoc into a FileDescriptorSet.

The tests decode the core's protobuf output with messages built from this set
by Python's protobuf runtime: the schema is the same file the core's types are
generated from, the compiler (protoc, from grpcio-tools) and the decoder are
not the core's. ``python tools/wire_descriptors.py`` writes the set to
``target/wire-descriptors.binpb`` (again only when a .proto file is newer) and
prints its path.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "target" / "wire-descriptors.binpb"
#: The files compiled (their imports come along), and the folders imports are
#: found in, as build.rs has them.
FILES = (
    "io/prometheus/client/metrics.proto",
    "remote.proto",
    "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
)
INCLUDES = (PROTO, PROTO / "prompb")


def compile_descriptors(out: Path = OUT) -> Path:
    """Compiles proto/ into ``out`` unless it is newer than every .proto file."""
    newest = max(path.stat().st_mtime for path in PROTO.rglob("*.proto"))
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    from grpc_tools import protoc  # type: ignore[import-untyped]  # a test dependency

    well_known = resources.files("grpc_tools") / "_proto"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    argv = [
        "protoc",
        *(f"-I{folder}" for folder in (*INCLUDES, well_known)),
        f"--descriptor_set_out={partial}",
        "--include_imports",
        *FILES,
    ]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc could not compile {', '.join(FILES)}")
    partial.replace(out)
    return out


if __name__ == "__main__":
    print(compile_descriptors())
    sys.exit(0)
