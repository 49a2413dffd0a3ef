"""The batch use the README documents: the plain `papermill` command line (no `-k`, no `--language`: papermill takes
both from the notebook) runs every template in `nbs/runs/` with small parameters.

The run templates share one run folder of the `quick` preset, in the order `selfsynth reproduce` runs them: the base
model (round 0), round 1 of NL (which also runs describe, embed and select, the stages every method shares), the
concept-selection study, the theory checks (`quick` Monte-Carlo sizes) and the report. The first call makes the quick
world smaller and the generations shorter (`-y "overrides: {...}"`, RunConfig fields); the later ones pass no
overrides and read them from the run folder's config.json. `pretrain_base` rebuilds a base model from a seed with a
handful of steps per stage and measures it on the same small world.
"""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = Path(sys.executable).parent / "papermill"
TEMPLATES = ROOT / "nbs" / "runs"
# what the templates do is tested elsewhere (test_rounds, test_select_study, test_theory, test_report): here it is
# papermill's path through them, which does not need the quick preset's 12 classes and 96-token answers
SMALL = dict(world_classes=4, world_train_per_class=2, world_test_per_class=1, describe_prompts=1, describe_samples=2,
             describe_max_new_tokens=32, synth_max_new_tokens=32, eval_max_new_tokens=32)


def papermill(template: str, out: Path, env_tmp: Path, yaml: dict | None = None, **params) -> dict:
    """Run `papermill nbs/runs/<template>.ipynb out -p k v ... [-y "k: v"]` from the repository root (`yaml`: the
    parameters that are not numbers or strings, such as `overrides`); the executed notebook."""
    cmd = [str(PAPERMILL), f"nbs/runs/{template}.ipynb", str(out)]
    for k, v in params.items(): cmd += ["-p", k, str(v)]
    if yaml: cmd += ["-y", "\n".join(f"{k}: {json.dumps(v)}" for k, v in yaml.items())]  # JSON is YAML
    params = {**params, **(yaml or {})}
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
    papermill("round", out / "round-base-0.ipynb", tmp_path, yaml=dict(overrides=SMALL), **common, method="base", round=0)
    papermill("round", out / "round-nl-1.ipynb", tmp_path, **common, method="nl", round=1)
    assert (run / "config.json").exists() and (run / "eval/base/round-0.jsonl").exists() and (run / "eval/nl/round-1.jsonl").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "quick" and {k: cfg[k] for k in SMALL} == SMALL
    papermill("study", out / "study.ipynb", tmp_path, **common, direct=False)
    assert (run / "round-1/selection_study.jsonl").exists()
    papermill("theory", out / "theory.ipynb", tmp_path, **common, quick=True)
    assert {t["id"] for t in json.loads((run / "report/theorems.json").read_text())} >= {"consistency", "infonce_bound"}
    papermill("report", out / "report.ipynb", tmp_path, **common, direct=False, n_examples=1)
    res = json.loads((run / "report/results.json").read_text())
    assert res["preset"] == "quick" and {"base", "nl"} <= set(res["methods"])
    assert res["dataset"]["classes"] == SMALL["world_classes"]  # every template kept the run folder's config
    assert res["dataset"]["test"] == SMALL["world_classes"] * SMALL["world_test_per_class"]


def test_pretrain_base_under_plain_papermill(tmp_path):
    "A few steps per stage: the template's whole path (tokenizer, three stages, save, loss plots, measurement) runs."
    model = tmp_path / "mini-llava"
    nb = papermill("pretrain_base", tmp_path / "pretrain_base.ipynb", tmp_path, yaml=dict(measure_overrides=SMALL),
                   out_dir=model, sizes="tiny", n_images=64, vision_steps=2, steps=2, drill_steps=2, gate=0.0, gate_images=32,
                   corpus=200, vocab_size=400, measure_preset="quick", measure_run_dir=tmp_path / "run")
    assert (model / "config.json").exists() and (model / "pretrain_log.json").exists()
    settings = json.loads((model / "pretrain_log.json").read_text())["settings"]
    assert (settings["corpus"], settings["gate_images"], settings["vocab_size"]) == (200, 32, 400)
    m = json.loads((model / "measurements.json").read_text())
    assert 0 < m["images"] <= SMALL["world_classes"] * SMALL["world_train_per_class"]  # measured on the small world
    from selfsynth.store import file_digest
    assert m["weights_sha256"] == file_digest(model / "model.safetensors")  # the model built is the model measured
    from selfsynth.basemodel import BASE_TARGETS
    assert set(m["properties"]) == set(BASE_TARGETS) and all("ci" in p and "met" in p for p in m["properties"].values())
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_every_template_parameter_is_visible_to_papermill():
    "`papermill --help-notebook` lists each parameter; a comment papermill cannot parse hides it (and warns at run time)."
    import ast, papermill
    for nb in sorted(TEMPLATES.glob("*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        declared = {s.targets[0].id for s in ast.parse("".join(cell["source"])).body if isinstance(s, ast.Assign)}
        assert set(papermill.inspect_notebook(str(nb))) == declared, nb.name
