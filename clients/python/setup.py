"""Adds to pyproject.toml what cannot be static: the code generated from proto/.

The contract is proto/ at the root of the repository, two levels up, so the
wheel is built from a checkout. When setuptools first asks build_py for the
package's files (for the metadata, then for the wheel), build_py runs
grpc_tools.protoc (grpcio-tools, a build requirement) over
proto/slop/*/v1/*.proto into build/generated/, anew each time, and the
packages slop.*.v1 are declared to live there. The generated code is never
in the source tree, and a wheel always matches the proto/ it was built from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
# Relative to HERE, as setuptools wants package directories.
GENERATED = Path("build") / "generated"


def contract_protos() -> list[Path]:
    """The contract's .proto files, relative to PROTO_ROOT."""
    protos = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.glob("slop/*/v1/*.proto"))
    if not protos:
        raise SystemExit(
            f"error: no proto/slop/*/v1/*.proto under {PROTO_ROOT}: build the wheel "
            "from a checkout of the repository (pip wheel clients/python)"
        )
    return protos


def contract_packages() -> list[str]:
    """slop, slop.auth, slop.auth.v1, …: the packages of the generated code."""
    packages = set()
    for proto in contract_protos():
        parts = proto.parent.parts
        packages.update(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return sorted(packages)


def generate() -> None:
    from grpc_tools import protoc

    out = HERE / GENERATED
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            # The well-known types (google/protobuf/*.proto) that grpcio-tools ships.
            f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *map(str, contract_protos()),
        ]
    )
    if status != 0:
        raise SystemExit(f"error: protoc failed on {PROTO_ROOT} (exit status {status})")
    # Regular packages: this distribution owns the name slop.
    for package in contract_packages():
        out.joinpath(*package.split("."), "__init__.py").touch()
    # The .pyi stubs beside the modules are for type checkers (PEP 561).
    (out / "slop" / "py.typed").touch()


class GenerateThenBuildPy(build_py):
    def finalize_options(self) -> None:
        super().finalize_options()
        generate()

    def run(self) -> None:
        # setuptools adds to build/lib and the wheel takes all of it: a module
        # of a removed .proto (or example) must not stay in the wheel.
        for package in ("slop", "slop_client"):
            shutil.rmtree(Path(self.build_lib) / package, ignore_errors=True)
        super().run()


setup(
    packages=["slop_client", *contract_packages()],
    package_dir={"slop": str(GENERATED / "slop")},
    package_data={"slop": ["py.typed"], "": ["*.pyi"]},
    cmdclass={"build_py": GenerateThenBuildPy},
)
