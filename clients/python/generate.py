#!/usr/bin/env python3
"""Generates the Python gRPC client of slop-server from the contract in proto/.

Runs ``grpc_tools.protoc`` (the ``grpcio-tools`` package: protoc and the
well-known types come with it, nothing else to install) over
``slop/{auth,session,notification}/v1/*.proto`` and writes the modules
(``*_pb2.py`` messages, ``*_pb2_grpc.py`` stubs, ``*_pb2.pyi`` type hints)
under ``--out`` (default: ``clients/python/generated``), as the namespace
package ``slop``:

    from slop.auth.v1 import auth_pb2, auth_pb2_grpc

The generated code is build output: it is not committed; run this again
whenever proto/ changes.

    python clients/python/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Python client of slop-server.")
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "generated",
        help="directory to write the modules to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    # The contract, and the googleapis error details it sends (ErrorInfo…).
    protos = sorted(
        str(p.relative_to(PROTO_ROOT))
        for pattern in ("slop/*/v1/*.proto", "google/rpc/*.proto")
        for p in PROTO_ROOT.glob(pattern)
    )
    if not protos:
        print(f"error: no .proto files under {PROTO_ROOT}/slop", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            # The well-known types (google/protobuf/*.proto) that grpcio-tools ships.
            f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={args.out}",
            f"--pyi_out={args.out}",
            f"--grpc_python_out={args.out}",
            *protos,
        ]
    )
    if status != 0:
        print(f"error: protoc failed (exit status {status})", file=sys.stderr)
        return 1
    print(f"generated the client of {len(protos)} .proto files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
