"The library is generated from the notebooks, and the notebooks are committed clean."
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _copy_project(dst: Path) -> Path:
    for name in ("pyproject.toml", "settings.ini", "setup.py", "nbs", "selfsynth"):
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


def test_demo_cells_keep_imports_in_cells_of_their_own():
    "nbdev's doc build executes every cell that contains an import: a demo cell mixing both fails the docs build."
    import json, re
    bad = []
    for nb in sorted(Path("nbs").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            src = "".join(cell["source"])
            if cell["cell_type"] != "code" or re.match(r"#\|\s*export", src): continue
            lines = [l for l in src.splitlines() if l.strip() and not l.strip().startswith("#")]
            imports = [l for l in lines if re.match(r"\s*(import|from)\s+\S+", l)]
            if imports and len(imports) != len(lines): bad.append(f"{nb.name} cell {i}: {imports[0].strip()}")
    assert not bad, "move these imports into an import-only cell: " + "; ".join(bad)


def unintroduced(cells: list) -> list:
    """Public names that a notebook's exported cells define (functions, classes, constants) and that neither its prose
    (markdown cells) nor its demo and test cells (unexported code) mention."""
    import ast, re
    names, said = [], []
    for cell in cells:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and re.match(r"#\|\s*export", src):
            tree = ast.parse(re.sub(r"^\s*#\|.*$", "", src, flags=re.M))
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
                elif isinstance(node, ast.Assign): names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif cell["cell_type"] in ("markdown", "code"): said.append(src)
    text = "\n".join(said)
    return [n for n in names if not n.startswith("_") and n != "log" and not re.search(rf"\b{re.escape(n)}\b", text)]


def test_the_check_finds_a_name_nobody_introduces():
    cells = [dict(cell_type="code", source=["#| export\n", "def shown(): pass\n", "def hidden(): pass\n", "LIMIT = 3\n"]),
             dict(cell_type="markdown", source=["`shown` does a thing."]), dict(cell_type="code", source=["assert LIMIT == 3"])]
    assert unintroduced(cells) == ["hidden"]


def test_every_public_name_is_introduced_in_prose_or_a_demo():
    "Notebooks are literate units: each name a notebook exports is named in its prose or used in one of its demos or tests."
    import json
    missing = {nb.name: got for nb in sorted(Path("nbs").glob("*.ipynb")) if (got := unintroduced(json.loads(nb.read_text())["cells"]))}
    assert not missing, f"introduce these names in prose or a demo beside their code: {missing}"
