"""Generate the Python code for protos/ into one package tree (gen/python/idmesh/...).

`make proto` runs this; tests/test_generated_code.py runs it into a temporary folder and fails
when the committed code differs (stale). Output: *_pb2.py, *_pb2.pyi, *_pb2_grpc.py, and an
__init__.py in every package folder. With --from-image, the code of a published API version
instead, from its buf image (protos/baseline/v1.binpb: v1 as first published), as a client built
on that version has it.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "gen" / "python"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def image_files(image: Path) -> list[str]:
    """The project's own proto files in a buf image (a FileDescriptorSet with extras)."""
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
    return sorted(f.name for f in descriptors.file if f.name.startswith("idmesh/"))


def generate(out_dir: Path, *, image: Path | None = None) -> None:
    """The code of protos/ (or, with image, of the protos a buf image holds) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if image is None:
        sources = [f"-I{PROTO_ROOT}", f"-I{resources.files('grpc_tools') / '_proto'}"]
        files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    else:
        sources = [f"--descriptor_set_in={image}"]
        files = image_files(image)
    args = [
        "grpc_tools.protoc",
        *sources,
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for folder in {p.parent for p in out_dir.rglob("*_pb2.py")}:
        while folder != out_dir:
            (folder / "__init__.py").touch()
            folder = folder.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--from-image", type=Path, help="a buf image instead of protos/")
    args = parser.parse_args()
    generate(args.out, image=args.from_image)
    print(f"generated {len(proto_files())} protos into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
