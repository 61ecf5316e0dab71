"""Regenerate the committed Python code of the contract from ``spikeshot.proto``.

    python -m spikeshot.v1.regenerate          # rewrite spikeshot_pb2.py, .pyi and _pb2_grpc.py
    python -m spikeshot.v1.regenerate --check  # exit 1, naming each file that differs

``grpc_tools.protoc`` runs with the folder above ``spikeshot/`` as its include root, so the
generated modules import each other as ``spikeshot.v1``. The output depends on the grpcio-tools
version, so regenerate with the version the ``dev`` extra installs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[1]
PROTO = "spikeshot/v1/spikeshot.proto"
GENERATED = ("spikeshot_pb2.py", "spikeshot_pb2.pyi", "spikeshot_pb2_grpc.py")


def generate(out_dir: Path) -> dict[str, bytes]:
    """Run protoc into ``out_dir``; return each generated file's name and bytes."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO}")
    gen = out_dir / "spikeshot" / "v1"
    return {name: (gen / name).read_bytes() for name in GENERATED}


def drifted(generated: dict[str, bytes], folder: Path) -> list[str]:
    """Names of the files in ``folder`` that are missing or differ from ``generated``."""
    return [
        name
        for name, data in generated.items()
        if not (folder / name).is_file() or (folder / name).read_bytes() != data
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikeshot.v1.regenerate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a committed file differs from protoc's output",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
    stale = drifted(generated, HERE)
    if args.check:
        for name in stale:
            print(
                f"{HERE / name}: differs from what {PROTO} generates; run "
                "python -m spikeshot.v1.regenerate",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for name in stale:
        (HERE / name).write_bytes(generated[name])
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
