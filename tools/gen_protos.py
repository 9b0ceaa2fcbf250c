"""Generates everything derived from protos/: Python and .pyi stubs, the Envoy descriptor set
and the OpenAPI document. The one code-generation rule; its outputs are git-ignored."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen" / "python"
BUILD = ROOT / "gateway" / "build"
DESCRIPTOR = BUILD / "descriptors.pb"


def _include_dirs() -> list[str]:
    # google/api/*.proto and google/rpc/*.proto ship in googleapis-common-protos (site-packages);
    # google/protobuf/*.proto ship inside grpc_tools.
    site_packages = Path(grpc_tools.__file__).resolve().parent.parent
    return [str(site_packages), str(Path(grpc_tools.__file__).parent / "_proto")]


def _run(args: list[str]) -> None:
    if protoc.main(["protoc", *args]) != 0:
        sys.exit(f"protoc failed: {' '.join(args)}")


def compile_protos(
    proto_root: Path, gen_dir: Path, descriptor: Path, includes: Sequence[Path] = ()
) -> list[str]:
    """Compiles every .proto under `proto_root` into stubs in `gen_dir` (replaced) and one
    descriptor set at `descriptor`; returns the sources, relative to `proto_root`. `includes`
    are further roots its imports may come from (not compiled)."""
    sources = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    roots = [str(proto_root), *map(str, includes), *_include_dirs()]
    includes_args = [f"-I{d}" for d in roots]
    shutil.rmtree(gen_dir, ignore_errors=True)
    gen_dir.mkdir(parents=True)
    descriptor.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            *includes_args,
            f"--python_out={gen_dir}",
            f"--pyi_out={gen_dir}",
            f"--grpc_python_out={gen_dir}",
            *sources,
        ]
    )
    for package_dir in [gen_dir, *(p for p in gen_dir.rglob("*") if p.is_dir())]:
        (package_dir / "__init__.py").touch()
    # Error details must be in the descriptor set so that Envoy renders ErrorInfo in JSON errors.
    _run(
        [
            *includes_args,
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={descriptor}",
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
            *sources,
        ]
    )
    return sources


def main() -> None:
    sources = compile_protos(PROTOS, GEN, DESCRIPTOR)
    print(
        f"generated {len(sources)} protos into {GEN.relative_to(ROOT)}"
        f" and {DESCRIPTOR.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
