"""``benchmarks/env_step.py`` on this tree and on an earlier git revision, alternately, in the same run.

Answers "is the env slower than before?" on a shared machine whose speed drifts: the revision's library is
exported with ``git archive`` to a temporary folder and put first on ``PYTHONPATH``; this file's ``env_step.py``
(the same timing code for both) runs against each library in turn, ``--pairs`` times, and the best of each
side is kept.

    python benchmarks/env_step_vs_rev.py 57e475d     # writes benchmarks/results/env_step_vs_57e475d.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_env_step(library: Path, out: Path, quick: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(library), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "env_step.py"), "--out", str(out)] + ["--quick"] * quick
    subprocess.run(cmd, check=True, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev", help="the earlier git revision (a commit, a tag, a branch)")
    p.add_argument("--pairs", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--quick", action="store_true", help="env_step.py --quick")
    p.add_argument("--out", default=None, help="default: benchmarks/results/env_step_vs_REV.json")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    runs: dict[str, list[dict]] = {"now": [], commit: []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        old.mkdir()
        (Path(tmp) / "old.tar").write_bytes(archive)
        with tarfile.open(Path(tmp) / "old.tar") as tar:
            tar.extractall(old, filter="data")
        for k in range(args.pairs):
            for side, library in ((commit, old), ("now", ROOT)) if k % 2 == 0 else (("now", ROOT), (commit, old)):
                runs[side].append(run_env_step(library, Path(tmp) / f"{side}-{k}.json", args.quick))
    best = {side: {"us_per_step": min(r["step_overhead"]["us_per_step"] for r in rs),
                   "speedup": max(r["vector"]["speedup"] for r in rs),
                   "batched_steps_per_s": max(r["vector"]["batched_steps_per_s"] for r in rs),
                   "sync_steps_per_s": max(r["vector"]["sync_steps_per_s"] for r in rs),
                   "all_speedups": [r["vector"]["speedup"] for r in rs]} for side, rs in runs.items()}
    result = {"now": head + " (working tree)", "rev": commit, "pairs": args.pairs, "quick": args.quick,
              "clock": "cpu (process_time)", "best": best}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"env_step_vs_{commit}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    for side, b in best.items():
        print(f"{side:>10}: step {b['us_per_step']:.2f} µs, batched/sync {b['speedup']:.2f}x "
              f"(runs: {', '.join(f'{x:.2f}' for x in b['all_speedups'])})")
    print(f"(written to {out})")
    return result


if __name__ == "__main__":
    main()
