"""The batch use the README documents: the plain `papermill` command line (no `-k`, no `--language`: papermill takes
both from the notebook) runs every template in `nbs/runs/` with small parameters.

The run templates share one run folder of the `quick` preset, in the order `selfsynth reproduce` runs them: the base
model (round 0), round 1 of NL (which also runs describe, embed and select, the stages every method shares), the
concept-selection study, the theory checks (`quick` Monte-Carlo sizes) and the report. `pretrain_base` rebuilds a
base model from a seed with a handful of steps per stage and measures it on two images.
"""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = Path(sys.executable).parent / "papermill"
TEMPLATES = ROOT / "nbs" / "runs"


def papermill(template: str, out: Path, env_tmp: Path, **params) -> dict:
    "Run `papermill nbs/runs/<template>.ipynb out -p k v ...` from the repository root; the executed notebook."
    cmd = [str(PAPERMILL), f"nbs/runs/{template}.ipynb", str(out)]
    for k, v in params.items(): cmd += ["-p", k, str(v)]
    assert not {"-k", "--kernel", "-l", "--language"} & set(cmd)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TMPDIR": str(env_tmp)})  # templates' tempfile folders land in pytest's tmp
    print(f"papermill {template}: {time.perf_counter() - t0:.1f} s")
    assert r.returncode == 0, f"papermill {template} failed:\n{r.stderr[-4000:]}"
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{template}: {errors[0]['ename']}: {errors[0]['evalue']}"
    injected = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and all(f"{k} = " in "".join(injected[0]["source"]) for k in params), template
    pm = nb["metadata"]["papermill"]
    assert pm["parameters"] == {k: (v if not isinstance(v, Path) else str(v)) for k, v in params.items()} and not pm.get("exception")
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    return nb


def test_templates_are_the_ones_tested():
    assert {p.stem for p in TEMPLATES.glob("*.ipynb")} == {"round", "study", "theory", "report", "pretrain_base"}


def test_run_templates_under_plain_papermill(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    common = dict(run_dir=run, preset="quick")
    papermill("round", out / "round-base-0.ipynb", tmp_path, **common, method="base", round=0)
    papermill("round", out / "round-nl-1.ipynb", tmp_path, **common, method="nl", round=1)
    assert (run / "config.json").exists() and (run / "eval/base/round-0.jsonl").exists() and (run / "eval/nl/round-1.jsonl").exists()
    assert json.loads((run / "config.json").read_text())["preset"] == "quick"
    papermill("study", out / "study.ipynb", tmp_path, **common, direct=False)
    assert (run / "round-1/selection_study.jsonl").exists()
    papermill("theory", out / "theory.ipynb", tmp_path, **common, quick=True)
    assert {t["id"] for t in json.loads((run / "report/theorems.json").read_text())} >= {"consistency", "infonce_bound"}
    papermill("report", out / "report.ipynb", tmp_path, **common, direct=False, n_examples=1)
    res = json.loads((run / "report/results.json").read_text())
    assert res["preset"] == "quick" and {"base", "nl"} <= set(res["methods"])


def test_pretrain_base_under_plain_papermill(tmp_path):
    "A few steps per stage: the template's whole path (tokenizer, three stages, save, loss plots, measurement) runs."
    model = tmp_path / "mini-llava"
    nb = papermill("pretrain_base", tmp_path / "pretrain_base.ipynb", tmp_path, out_dir=model, sizes="tiny", n_images=64,
                   vision_steps=2, steps=2, drill_steps=2, gate=0.0, measure_preset="quick", measure_run_dir=tmp_path / "run")
    assert (model / "config.json").exists() and (model / "pretrain_log.json").exists()
    m = json.loads((model / "measurements.json").read_text())
    from selfsynth.basemodel import BASE_TARGETS
    assert set(m["properties"]) == set(BASE_TARGETS) and all("ci" in p and "met" in p for p in m["properties"].values())
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
