"""Fail when gen/ differs from what `make gen`'s protoc command produces from protos/."""

from __future__ import annotations

import filecmp
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(out: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={out}",
         f"--pyi_out={out}", f"--grpc_python_out={out}", *protos],
        cwd=ROOT, check=True,
    )
    for d in [out / "nija", *(p for p in (out / "nija").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


def tree(base: pathlib.Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        generate(fresh)
        committed = ROOT / "gen"
        want, have = tree(fresh), tree(committed)
        problems = [f"missing from gen/: {p}" for p in sorted(want - have)]
        problems += [f"not produced by protoc: gen/{p}" for p in sorted(have - want)]
        problems += [
            f"differs: gen/{p}" for p in sorted(want & have)
            if not filecmp.cmp(fresh / p, committed / p, shallow=False)
        ]
    for line in problems:
        print(line)
    print("gen/ is up to date" if not problems else "gen/ drifted: run `make gen`")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
