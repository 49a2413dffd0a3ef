"Paper-scale cost: the work counted per stage, the minutes from rates, and the published page agreeing with its source."
import json, shutil
from pathlib import Path
import pytest
from selfsynth.config import RunConfig
from selfsynth.costs import stage_work, sampling_rate, iteration_minutes, cost_table, latest_results, publish_costs, ESTIMATE_CELL

BENCH = {"device": "Test GPU",  # round rates: every figure below can be checked by hand
         "sampling": {"baseline_tokens_per_s": 1000.0, "optimised_tokens_per_s": 6000.0, "shapes": {"prompts": 2},
                      "backends": {"eager": {"prompts": 2, "tokens_per_s": 1000.0}, "shared": {"error": "OutOfMemoryError"},
                                   "cascade": {"prompts": 2, "tokens_per_s": 4000.0},  # the rate at eager's batch: used
                                   "cascade-wide": {"prompts": 6, "tokens_per_s": 6000.0}}},
         "sft": {"baseline": {"samples_per_s": 10.0}, "optimised": {"samples_per_s": 20.0}},
         "selection": {"baseline_s": 5994.0, "optimised_s": 59.94}}


def test_stage_work_follows_the_config():
    w = stage_work(100, 50, RunConfig())
    assert w["describe_tokens"] == 100 * 3 * 10 * 256 and w["synth_tokens"] == 100 * 8 * 128
    assert w["rejection_tokens"] == 100 * 8 * 3 * 196 and w["tune_first"] == w["tune_later"] == 100 * 8 * 2
    assert w["eval_tokens"] == 50 * 128
    assert stage_work(100, 50, RunConfig(describe_samples=5))["describe_tokens"] == w["describe_tokens"] // 2


def test_minutes_from_rates():
    assert sampling_rate(BENCH["sampling"], "optimised") == ("cascade", 4000.0)
    assert sampling_rate(BENCH["sampling"], "baseline") == ("eager", 1000.0)
    w = stage_work(5994, 10)
    base, opt = iteration_minutes(BENCH, w, "baseline"), iteration_minutes(BENCH, w, "optimised")
    assert base["describe"] == pytest.approx(5994 * 7680 / 1000 / 60) and opt["describe"] == pytest.approx(base["describe"] / 4)
    assert base["select"] == pytest.approx(5994 / 60) and opt["select"] == pytest.approx(0.999)
    assert base["tune_first"] == pytest.approx(5994 * 16 / 10 / 60) and opt["tune_later"] == pytest.approx(base["tune_later"] / 2)
    assert opt["iteration_later"] == pytest.approx(opt["rejection"] + opt["tune_later"])


def test_cost_table_and_published_page_agree(tmp_path):
    res = tmp_path / "test-gpu-2026-01-01.json"
    res.write_text(json.dumps(BENCH))
    t = cost_table(res)
    assert list(t.index) == ["cub-200", "fgvc-aircraft", "stanford-dogs", "chest-xray", "ham10000", "pld"]
    assert (t["baseline: iteration 1"] > t["selfsynth: iteration 1"]).all() and t.loc["cub-200", "paper (min)"] == 143
    # the committed page holds exactly what publish_costs writes from the newest committed result
    page = tmp_path / "31_costs.ipynb"
    shutil.copy("nbs/31_costs.ipynb", page)
    text = publish_costs(latest_results(), page)
    cell = lambda p: next(c for c in json.loads(p.read_text())["cells"] if c["id"] == ESTIMATE_CELL)
    assert "".join(cell(page)["source"]) == text == "".join(cell(Path("nbs/31_costs.ipynb"))["source"])


def test_latest_results_needs_all_three(tmp_path):
    (tmp_path / "gpu-2026-01-01.json").write_text(json.dumps({"device": "x", "sft": {}}))
    with pytest.raises(FileNotFoundError, match="selection, sampling and sft"): latest_results(tmp_path)
