"""How long each notebook in nbs/ takes to run top to bottom with its demo parameters, against the 120 s budget.

Each notebook runs alone, one after another, as `nbdev-test --n-workers 1 --timing nbs/<nb>` (the cells
`make test` runs: `#| slow` and `#| eval: false` cells skipped), in a fresh process. Printed per notebook: the
notebook's own time as nbdev-test reports it, the wall time of the whole command (process start and imports
included), the ratio of the wall time to the budget, and whether it passed.

By default it works on a copy of the working tree in a temporary folder (the notebooks' side effects, such as
`nbdev_export()` cells rewriting `selfsynth/`, stay there); `--in-place` runs in the repository itself.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/notebook_times.py [nbs/00_config.ipynb ...] [--json out.json]
"""
from __future__ import annotations
import argparse, json, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 120.0
SKIP = {".git", ".venv", "_proc", "_docs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "selfsynth.egg-info"}


def copy_tree(dst: Path) -> Path:
    "A copy of the working tree without the venv, git and build folders."
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in SKIP])
    return dst


def time_notebook(nb: Path, root: Path, timeout: float = 1200) -> dict:
    "Run one notebook under nbdev-test in `root`; its times and status."
    cmd = [str(Path(sys.executable).parent / "nbdev-test"), "--n-workers", "1", "--timing", str(nb.relative_to(root))]
    t0 = time.perf_counter()
    try: r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout); rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e: rc, out = "timeout", str(e.stdout or "")
    wall = time.perf_counter() - t0
    m = re.search(rf"{re.escape(nb.name)}: (\d+) secs", out)
    return dict(notebook=nb.name, nbdev_test_s=int(m.group(1)) if m else None, wall_s=round(wall, 1),
                ratio=round(wall / BUDGET_S, 2), passed=rc == 0, tail="" if rc == 0 else out[-1500:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to time (default: every nbs/*.ipynb)")
    ap.add_argument("--in-place", action="store_true", help="run in the repository instead of a copy")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbtimes-") as tmp:
        root = ROOT if a.in_place else copy_tree(Path(tmp) / "repo")
        nbs = [root / Path(p).resolve().relative_to(ROOT) for p in a.notebooks] if a.notebooks else sorted((root / "nbs").glob("*.ipynb"))
        print(f"{'notebook':<24} {'nbdev-test s':>12} {'wall s':>8} {'wall/120 s':>10}  status", flush=True)
        rows = []
        for nb in nbs:
            row = time_notebook(nb, root)
            rows.append(row)
            status = ("ok" if row["ratio"] <= 1 else "OVER BUDGET") if row["passed"] else "FAILED"
            print(f"{row['notebook']:<24} {str(row['nbdev_test_s']):>12} {row['wall_s']:>8.1f} {row['ratio']:>10.2f}  {status}", flush=True)
            if row["tail"]: print("   " + row["tail"].replace("\n", "\n   "), flush=True)
    total = sum(r["wall_s"] for r in rows)
    worst = max(rows, key=lambda r: r["wall_s"])
    print(f"total {total:.0f} s for {len(rows)} notebooks; slowest {worst['notebook']} {worst['wall_s']:.1f} s "
          f"({worst['ratio']:.2f} of the budget); failed: {[r['notebook'] for r in rows if not r['passed']] or 'none'}")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["passed"] and r["ratio"] <= 1 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
