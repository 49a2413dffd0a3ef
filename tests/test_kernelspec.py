"""Every notebook names its kernel and language, so JupyterLab opens it and papermill runs it without overrides.

Also a script that adds them, then cleans with nbdev-clean (which keeps both: `kernelspec` always,
`language_info` because `[tool.nbdev] allowed_metadata_keys` lists it):

    .venv/bin/python tests/test_kernelspec.py nbs/01_store.ipynb nbs/runs/report.ipynb ...   # no argument: every notebook
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KERNELSPEC = {"display_name": "python3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
TEMPLATES = sorted((ROOT / "nbs" / "runs").glob("*.ipynb"))


def notebooks(): return sorted((ROOT / "nbs").glob("*.ipynb")) + TEMPLATES


def add_kernelspec(path) -> bool:
    "Give the notebook at `path` the python3 kernelspec and python language_info; True if it changed."
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    md = nb.setdefault("metadata", {})
    if md.get("kernelspec") == KERNELSPEC and md.get("language_info", {}).get("name") == "python": return False
    md["kernelspec"] = dict(KERNELSPEC)
    md["language_info"] = {**md.get("language_info", {}), **LANGUAGE_INFO}
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def test_every_notebook_names_kernel_and_language():
    bad = [str(p.relative_to(ROOT)) for p in notebooks()
           if json.loads(p.read_text())["metadata"].get("kernelspec", {}).get("name") != "python3"
           or json.loads(p.read_text())["metadata"].get("language_info", {}).get("name") != "python"]
    assert not bad, f"no python3 kernelspec / python language_info (fix: {sys.executable} tests/test_kernelspec.py {' '.join(bad)})"


def test_nbdev_clean_keeps_kernel_and_language(tmp_path):
    for name in ("pyproject.toml",): (tmp_path / name).write_text((ROOT / name).read_text())
    nb = tmp_path / "nbs" / "a.ipynb"; nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": [], "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                                                         "language_info": {"name": "python", "version": "3.11.2"}, "widgets": {}, "other": 1},
                              "nbformat": 4, "nbformat_minor": 5}))
    subprocess.run([BIN / "nbdev-clean", "--fname", str(nb)], cwd=tmp_path, check=True, capture_output=True)
    md = json.loads(nb.read_text())["metadata"]
    assert md["kernelspec"] == KERNELSPEC and md["language_info"]["name"] == "python" and "other" not in md


def test_papermill_finds_kernel_language_and_parameters_of_every_template():
    "What `papermill in.ipynb out.ipynb -p ...` looks up before it starts a kernel, without executing anything."
    from papermill.iorw import load_notebook_node
    from papermill.engines import papermill_engines
    from papermill.parameterize import parameterize_notebook
    from papermill.utils import find_first_tagged_cell_index
    from jupyter_client.kernelspec import KernelSpecManager
    assert TEMPLATES and any(p.name == "round.ipynb" for p in TEMPLATES)
    assert KernelSpecManager().get_kernel_spec("python3").language == "python"  # ipykernel's kernel is installed
    for p in TEMPLATES:
        nb = load_notebook_node(str(p))
        assert papermill_engines.nb_kernel_name(None, nb) == "python3", p.name
        assert papermill_engines.nb_language(None, nb) == "python", p.name
        assert find_first_tagged_cell_index(nb, "parameters") >= 0, f"{p.name}: no cell tagged `parameters`"
        out = parameterize_notebook(nb, {"papermill_probe": 1})
        assert any("papermill_probe = 1" in c.source for c in out.cells), p.name


if __name__ == "__main__":
    paths = [Path(a).resolve() for a in sys.argv[1:]] or notebooks()
    changed = [p for p in paths if add_kernelspec(p)]
    for p in changed: subprocess.run([BIN / "nbdev-clean", "--fname", str(p)], cwd=ROOT, check=True)
    print("\n".join(map(str, changed)) or "nothing to change")
