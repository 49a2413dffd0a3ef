"Tests of selfsynth.rounds: round chaining, folder layout, resume, errors."
from pathlib import Path
import pytest
from selfsynth.store import RunStore, read_jsonl
import selfsynth.tune as tune
from selfsynth.rounds import run_round, model_for, round_stage_names, stage_times

@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run_config):
    cfg = tiny_run_config(tmp_path_factory.mktemp("r"))
    store = RunStore(cfg.run_dir, cfg)
    return store, run_round(store, "nl", 2)

def test_round_two_chains_from_round_one(run):
    store, s = run
    root = store.root
    for k in (1, 2):
        d = root / f"baselines/nl/round-{k}"
        assert (d / "qa.jsonl").exists() and (d / "adapter/adapter_config.json").exists() and (d / "merged/config.json").exists()
    assert not (root / "round-2").exists()  # `ours` lives at the top level; nl does not write there
    assert s["model"] == str(root / "baselines/nl/round-2/merged") == model_for(store, "nl", 2)
    assert list(s["stages"]) == round_stage_names("nl", 2) == ["rejection/nl/round-2", "tune/nl/round-2"]
    tune2 = store.manifest("tune/nl/round-2")
    assert "baselines/nl/round-1/merged" in tune2["inputs"] and tune2["inputs"]["baselines/nl/round-1/merged"].startswith("stage:")
    assert tune2["counts"]["steps"] >= 1 and len(tune2["counts"]["loss"]) == tune2["counts"]["steps"]
    qa = read_jsonl(root / "baselines/nl/round-2/qa.jsonl")
    n_images = store.manifest("select")["counts"]["images"]  # images with a usable description
    assert n_images >= 4 and len(qa) == n_images * 3 and all(r["answer"] == f"This is a {r['label']}." for r in qa)
    times = stage_times(store)
    assert {"world", "describe", "select", "synthesize/nl", "tune/nl/round-1", "tune/nl/round-2"} <= set(times)

def test_asking_again_recomputes_nothing(run, monkeypatch):
    store, first = run
    calls = []
    monkeypatch.setattr(tune, "train", lambda *a, **kw: calls.append(1))
    again = run_round(store, "nl", 2)
    assert calls == [] and again["stages"] == first["stages"]

def test_lost_round_output_is_rebuilt(run):
    "A deleted merged model of round 2 is retrained; round 1 is not."
    store, _ = run
    import shutil
    r1 = store.manifest("tune/nl/round-1")["finished"]
    shutil.rmtree(store.root / "baselines/nl/round-2/merged")
    s = run_round(store, "nl", 2)
    assert Path(s["model"]).is_dir() and store.manifest("tune/nl/round-1")["finished"] == r1

def test_model_for_and_errors(run):
    store, _ = run
    assert model_for(store, "ours", 0) == store.cfg.model and model_for(store, "base", 0) == store.cfg.model
    assert model_for(store, "lge", 3).endswith("baselines/lge/round-3/merged")
    with pytest.raises(ValueError, match="unknown method 'foo'"): run_round(store, "foo", 1)
    with pytest.raises(ValueError, match=r"round must be in 1..3"): run_round(store, "ours", 4)
