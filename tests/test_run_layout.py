"The run folder's layout is spelled in one module (00b_layout): no other module writes a run-relative path literal."
import ast, re
from pathlib import Path
import selfsynth

PKG = Path(selfsynth.__file__).parent
RUN_PATH = re.compile(r"^(round-\d|round-1/|baselines/|eval/|report/|world/|data/(manifest|concepts)|notebooks/|lanes\.json)")  # data/mini-llava: the project\'s model

def _docstrings(tree) -> set:
    "ids of the string nodes that are docstrings (documentation may name paths)."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant): out.add(id(first.value))
    return out

def run_path_literals(source: str) -> list[str]:
    "String literals (and the literal parts of f-strings) of `source` that start like a run-relative path."
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and RUN_PATH.match(n.value): found.append(n.value)
    return found

def test_the_guard_finds_a_path_literal():
    assert run_path_literals('p = store.path("round-1/qa.jsonl")') == ["round-1/qa.jsonl"]
    assert run_path_literals('p = f"baselines/{m}/round-{k}"') == ["baselines/"]
    assert run_path_literals('def f():\n    "Writes `round-1/qa.jsonl`."\n    return 1') == []  # documentation may name it

def test_run_paths_live_in_the_layout_module():
    offenders = {p.name: lits for p in sorted(PKG.glob("*.py")) if p.name not in ("layout.py", "_modidx.py")
                 if (lits := run_path_literals(p.read_text()))}
    assert not offenders, f"run-folder paths spelled outside selfsynth/layout.py (00b_layout): {offenders}"
