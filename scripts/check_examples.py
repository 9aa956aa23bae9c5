"""Run every example pipeline with `fastflow run` and compare its outcome with expected.json."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "artifacts" / "runs"


def main(argv: list[str]) -> int:
    expected = json.loads((ROOT / "pipelines" / "expected.json").read_text())
    names = argv or list(expected)
    OUT.mkdir(parents=True, exist_ok=True)
    mismatches = []
    for name in names:
        record_path = OUT / f"{name}.json"
        print(f"\n### fastflow run {name}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "fastflow", "run", name, "--repo", str(ROOT),
             "--record-json", str(record_path)],
            check=False,
        )
        status = json.loads(record_path.read_text())["status"] if record_path.exists() else "no record"
        if status != expected[name]:
            mismatches.append(f"{name}: expected {expected[name]}, got {status}")
    print()
    for name in names:
        record_path = OUT / f"{name}.json"
        status = json.loads(record_path.read_text())["status"] if record_path.exists() else "no record"
        mark = "ok " if status == expected[name] else "BAD"
        print(f"{mark} {name:16} {status}")
    if mismatches:
        print("\nUnexpected outcomes:\n  " + "\n  ".join(mismatches), file=sys.stderr)
        return 1
    print(f"\nAll {len(names)} examples ended as expected; records in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
