"The library is generated from the notebooks, and the notebooks are committed clean."
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _copy_project(dst: Path) -> Path:
    for name in ("pyproject.toml", "nbs", "selfsynth"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    return dst


def _py_files(d: Path) -> set:
    return {p.relative_to(d) for p in d.rglob("*.py") if "__pycache__" not in p.parts}


def test_export_of_the_notebooks_leaves_the_library_unchanged(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([BIN / "nbdev-export"], cwd=proj, check=True, capture_output=True)
    ours, fresh = ROOT / "selfsynth", proj / "selfsynth"
    assert _py_files(ours) == _py_files(fresh), "modules differ: run nbdev-export"
    stale = [str(p) for p in _py_files(ours) if not filecmp.cmp(ours / p, fresh / p, shallow=False)]
    assert not stale, f"selfsynth/ is not what nbdev-export makes of nbs/: {stale} (edit the notebook, export)"


def test_notebooks_are_clean(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([BIN / "nbdev-clean", "--fname", "nbs"], cwd=proj, check=True, capture_output=True)
    dirty = [str(p.relative_to(proj)) for p in (proj / "nbs").rglob("*.ipynb")
             if p.read_bytes() != (ROOT / p.relative_to(proj)).read_bytes()]
    assert not dirty, f"run nbdev-clean: {dirty}"
