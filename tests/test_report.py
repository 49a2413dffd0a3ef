"""Tests of selfsynth.report on a synthetic run folder: the quick world, evaluation rows written by the test (Base,
NL and Ours only: L+GE and w/o filtering are missing on purpose), descriptions in the base model's style, stage
manifests with known wall times."""
import json, random

import numpy as np
import pandas as pd
import pytest

from selfsynth.config import preset
from selfsynth.evaluate import eval_path
from selfsynth.report import (RESULTS_KEYS, build_report, collect_results, concept_selection, mean_ci, paper_table,
                              round_minutes, selection_scores, table1, table12, table8, to_latex, to_markdown)
from selfsynth.store import RunStore, read_json, write_json, write_jsonl


def _rows(records, p_correct, ee, cs, rng):
    return [dict(id=r.id, label=r.label, question="q", answer=f"This is a {r.label}.", correct=(c := rng.random() < p_correct),
                 correct_substring=c or rng.random() < 0.2, predicted=r.label, ee=ee, cs=cs, fs=6.0, fs_nll=9.0, fs_tokens=5,
                 grounded_precision=cs, repeated=0, claims=[], judge="synthetic judge") for r in records]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from selfsynth import basemodel as bm
    from selfsynth.data import read_manifest
    from selfsynth.world import world_stage
    store = RunStore(tmp_path_factory.mktemp("report") / "run", preset("quick", device="cpu"))
    world_stage(store)
    recs = read_manifest(store.path("world/manifest.jsonl"))
    test = [r for r in recs if r.split == "test"]
    rng = random.Random(0)
    write_jsonl(store.path(eval_path("base", 0)), _rows(test, 0.1, 1, 0.4, rng))
    for k in (1, 2):
        write_jsonl(store.path(eval_path("nl", k)), _rows(test, 0.4 + 0.2 * k, 0, None, rng))
        write_jsonl(store.path(eval_path("ours", k)), _rows(test, 0.5 + 0.2 * k, 1, 0.7 + 0.1 * k, rng))
    nrng = np.random.default_rng(0)  # descriptions of what each training image shows, in the base model's wording
    write_jsonl(store.path("round-1/descriptions.jsonl"),
                [dict(id=r.id, label=r.label, descriptions=[bm.describe_text(r.attributes, nrng) for _ in range(9)])
                 for r in recs if r.split == "train"])
    for name, s in [("describe", 60), ("select", 6), ("synthesize/ours", 54), ("tune/ours/round-1", 120),
                    ("rejection/ours/round-2", 90), ("tune/ours/round-2", 150), ("eval/ours/round-1", 30)]:
        write_json(store.manifest_path(name), dict(name=name, key="k", config={}, inputs={}, outputs=[], code_version="t",
                                                   counts={"device": "cpu"} if name.startswith("eval") else {},
                                                   wall_s=s, finished="t"))
    res = build_report(store, n_examples=2, direct=False)
    return store, res, test


def test_missing_methods_named_and_rest_rendered(run):
    store, res, _ = run
    assert res["missing_methods"] == ["lge", "ours_nofilter"]
    md = store.path("report/report.md").read_text()
    assert "Missing from this run" in md and "lge, ours_nofilter" in md
    t1 = pd.read_csv(store.path("report/table1.csv"))
    assert list(t1.method) == ["Base (zero-shot)", "NL (label only)", "Ours"]
    for f in ("table1.md", "table1.tex", "table12.csv", "cs_per_iteration.md", "table8.tex", "table13.md",
              "figure5_concept_selection.png", "accuracy_per_round.png", "examples.png", "examples.md", "results.json"):
        assert store.path(f"report/{f}").stat().st_size > 0, f


def test_results_json_matches_schema(run):
    store, res, test = run
    on_disk = read_json(store.path("report/results.json"))
    assert set(RESULTS_KEYS) == set(on_disk)  # the documented schema is the whole file
    assert set(on_disk["dataset"]) >= {"name", "classes", "train", "test"}
    assert on_disk["dataset"]["classes"] == 12 and on_disk["dataset"]["test"] == len(test)
    assert set(on_disk["base_model"]) >= {"zero_shot_accuracy", "chance_accuracy", "description_concept_precision",
                                          "distinct_descriptions_per_image", "rewrite_label_rate"}
    assert on_disk["base_model"]["chance_accuracy"] == round(100 / 12, 2)
    assert set(on_disk["methods"]) == {"base", "nl", "ours"}
    assert [e["round"] for e in on_disk["methods"]["base"]] == [0] and [e["round"] for e in on_disk["methods"]["ours"]] == [1, 2]
    for es in on_disk["methods"].values():
        for e in es:
            assert set(e) >= {"round", "accuracy", "accuracy_substring", "accuracy_ci", "accuracy_seeds", "n_test", "ee", "cs",
                              "fs", "grounded_precision", "repetition_rate", "judge"}
            assert e["accuracy_ci"][0] <= e["accuracy"] <= e["accuracy_ci"][1] and e["n_test"] == len(test)
            assert e["accuracy_seeds"]["values"] == [e["accuracy"]] and e["judge"] == "synthetic judge"
    assert on_disk["schema_version"] == 2 and on_disk["seeds"] == [0] and on_disk["world_seed"] == 0
    assert "earliest" in on_disk["accuracy_rule"] and on_disk["versions"]["torch"] and on_disk["dtype"] == "auto"
    comps = {(c["a"], c["b"], c["round"], c["metric"]) for c in on_disk["comparisons"]}
    assert ("ours", "nl", 2, "accuracy") in comps and ("ours", "nl", 1, "cs") in comps
    assert all(0 <= c["p"] <= 1 for c in on_disk["comparisons"])
    verdicts = {c["id"]: c["verdict"] for c in on_disk["claims"]}
    assert set(verdicts) == {"C1", "C2", "C3", "C4", "C5"} and verdicts["C2"] == verdicts["C5"] == "inconclusive"  # L+GE, w/o filtering missing
    assert on_disk["methods"]["nl"][0]["cs"] is None  # not applicable -> null, not 0
    cs = on_disk["concept_selection"]
    assert set(cs) >= {"n_descriptions", "precision", "recall", "by_text_encoder"}
    assert cs["n_descriptions"] == [1, 2, 5, 9]  # the requested n up to m = 9, and m
    assert set(cs["precision"]) == {"infonce", "cosine", "class_all", "random"}
    assert all(len(v) == 4 for v in cs["precision"].values())
    assert "all-MiniLM-L6-v2" in cs["by_text_encoder"]
    assert on_disk["theorems"] == []
    assert set(on_disk["timing_s"]) == {"describe", "select", "synthesize", "train", "sample", "evaluate", "total"}
    assert on_disk["timing_s"]["train"] == 270 and on_disk["timing_s"]["sample"] == 90 and on_disk["device"] == "cpu"


def test_measured_numbers_come_from_the_rows_and_paper_numbers_stay_out(run):
    store, res, test = run
    from selfsynth.store import read_jsonl
    rows = read_jsonl(store.path(eval_path("ours", 2)))
    assert res["methods"]["ours"][1]["accuracy"] == round(100 * sum(r["correct"] for r in rows) / len(rows), 2)
    text = json.dumps(res)
    assert "80.24" not in text and "CUB" not in text  # the paper's Table 1 never enters results.json


def test_table1_puts_labelled_paper_columns_beside_ours(run):
    store, res, _ = run
    t1 = table1(collect_results(store), store.cfg)
    paper = paper_table("table1_main").set_index(["dataset", "method"])
    ours = t1.set_index("method").loc["Ours"]
    assert ours["paper CUB-200 acc it4"] == paper.loc[("cub-200", "ours"), "acc_it4"]
    assert ours["paper CUB-200 CS"] == paper.loc[("cub-200", "ours"), "cs"]
    assert ours["acc it2"] == res["methods"]["ours"][1]["accuracy"] and ours["CS"] == res["methods"]["ours"][1]["cs"]
    assert all(c.startswith("paper CUB-200") for c in t1.columns if "paper" in c)
    assert t1.set_index("method").loc["Base (zero-shot)", "acc it1"] == res["methods"]["base"][0]["accuracy"]
    assert len(table12(collect_results(store), store.cfg)) == 1  # w/o filtering missing: only ours


def test_table8_minutes_per_iteration(run):
    store, _, _ = run
    embed = store.manifest("embed")["wall_s"]  # a real stage: the report's selection study embedded the descriptions
    assert round_minutes(store) == {1: round((60 + embed + 6 + 54 + 120) / 60, 2), 2: 4.0}  # and (90 + 150) s
    assert pd.read_csv(store.path("report/table8.csv")).dataset.iloc[1] == "paper CUB-200"
    t8 = table8(store, "cpu")
    assert t8["minutes/iteration"].iloc[0] == round((round_minutes(store)[1] + 4.0) / 2, 2) and t8.dataset.iloc[1] == "paper CUB-200"


def test_concept_selection_scores_by_hand(run):
    store, _, _ = run
    assert selection_scores(["a", "b"], ["a", "c", "d"]) == (0.5, 1 / 3)
    assert selection_scores([], ["a"]) == (None, 0.0)
    rows = [dict(method="class_all", n=9, id="x", selected=["a", "b", "c", "d"]),
            dict(method="class_all", n=9, id="y", selected=["a", "b"]),
            dict(method="ib", n=1, id="x", selected=["a"])]
    sel = concept_selection(rows, {"x": ["a", "b"], "y": ["b"], "z": ["a"]})
    ca = sel.set_index("selector").loc["class_all"]
    assert ca.precision == pytest.approx((0.5 + 0.5) / 2) and ca.recall == pytest.approx(1.0) and ca.images == 2
    # on the run: class_all selects all of Z_c, so its recall is 1 and its precision is |visible| / |Z_c| per image
    from selfsynth.data import read_concepts, read_manifest
    concepts = read_concepts(store.path("world/concepts.json"))
    train = [r for r in read_manifest(store.path("world/manifest.jsonl"), split="train") if r.visible is not None]
    f5 = pd.read_csv(store.path("report/figure5.csv")).set_index("selector")
    assert f5.loc["class_all", "recall"] == 1.0
    assert f5.loc["class_all", "precision"] == pytest.approx(np.mean([len(r.visible) / len(set(concepts[r.label])) for r in train]))
    assert f5.loc["class_all", "precision_lo"] < f5.loc["class_all", "precision"] < f5.loc["class_all", "precision_hi"]


def test_mean_ci():
    m, lo, hi = mean_ci([0.5] * 10)
    assert m == lo == hi == 0.5
    v = list(np.random.default_rng(0).random(200))
    m, lo, hi = mean_ci(v)
    assert lo < m < hi and hi - lo < 0.2
    assert mean_ci([None, None]) == (None, None, None) and mean_ci([0.3])[1] is None


def test_markdown_and_latex_formatting():
    df = pd.DataFrame({"method": ["a_b & c", "d"], "acc": [85.0234, None]})
    md = to_markdown(df)
    assert "| a_b & c | 85.02 |" in md and "| d | – |" in md and "|---|---:|" in md
    tex = to_latex(df, "Acc %")
    assert r"a\_b \& c & 85.02 \\" in tex and r"d & -- \\" in tex and r"\caption{Acc \%}" in tex
    tex = to_latex(pd.DataFrame({"what": ["{x}~y^2 \\ z", "precision at τ = 0.1, n ≥ 30"], "p": [0.5, 0.01]}))
    assert r"\{x\}\textasciitilde{}y\textasciicircum{}2 \textbackslash{} z & 0.50" in tex
    assert r"precision at $\tau$ = 0.1, n $\geq$ 30 & 0.01" in tex
    assert "no data" in to_markdown(pd.DataFrame())


def test_report_template_runs_under_papermill(run, tmp_path):
    from selfsynth.runner import execute
    store, _, _ = run
    out = execute(store, "report", "report-test", direct=False, n_examples=1)
    nb = json.loads(out.read_text())
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))


def test_selection_precision_by_tau(run):
    store, res, _ = run
    by_tau = res["concept_selection"]["by_tau"]
    assert list(by_tau) == ["0.01", "0.1", "0.3", "1"]
    # the run's own τ (0.1) and the by-encoder figure are the same selection, computed by separate stages
    assert by_tau["0.1"] == res["concept_selection"]["by_text_encoder"]["all-MiniLM-L6-v2"]
    assert len(set(by_tau.values())) > 1 and all(0 <= v <= 1 for v in by_tau.values())
    md = store.path("report/selection_by_tau.md").read_text()
    assert "0.1 (this run)" in md and md.count("\n|") >= 5


def test_bad_eval_files_are_named(run, tmp_path):
    import shutil
    from selfsynth.report import collect_evals
    store, _, test = run
    copy = RunStore(tmp_path / "run", store.cfg)
    shutil.copytree(store.root, copy.root, dirs_exist_ok=True)
    path = copy.path(eval_path("nl", 1))
    from selfsynth.store import read_jsonl
    rows = read_jsonl(path)
    write_jsonl(path, rows[:-1])
    with pytest.raises(ValueError, match=rf"{path}: no answer for test image '{rows[-1]['id']}'"): collect_evals(copy)
    write_jsonl(path, rows[:-1] + [dict(rows[-1], label="Dodo")])
    with pytest.raises(ValueError, match=rf"{path}:{len(rows)}: image '{rows[-1]['id']}' has label 'Dodo'"): collect_evals(copy)
    write_jsonl(path, rows)
    assert collect_evals(copy)[0]["nl", 1] == collect_evals(store)[0]["nl", 1]  # nothing else was touched


def test_seeds_are_pooled_paired_and_given_a_t_interval(run, tmp_path):
    "A second training seed in seeds/1/: per-seed accuracies, their t interval, and comparisons over both seeds' pairs."
    import shutil
    from selfsynth.report import collect_evals, comparisons
    store, _, test = run
    copy = RunStore(tmp_path / "run", store.cfg)
    shutil.copytree(store.root, copy.root, dirs_exist_ok=True)
    other = RunStore(copy.path("seeds/1"), store.cfg.replace(seed=1, run_dir=str(copy.path("seeds/1"))))
    shutil.copytree(store.path("world"), other.path("world"))
    rng = random.Random(1)
    for m, k, p in (("ours", 1, 0.9), ("ours", 2, 0.9), ("nl", 1, 0.2), ("nl", 2, 0.2)):
        write_jsonl(other.path(eval_path(m, k)), _rows(test, p, 1, 0.8, rng))
    evals, seeds = collect_evals(copy)
    assert seeds == [0, 1] and len(evals["ours", 2]) == 2 * len(test) and len(evals["base", 0]) == len(test)
    ours = collect_results(copy, evals, seeds)["methods"]["ours"][1]
    per = [x["accuracy"] for x in ours["accuracy_per_seed"]]
    assert len(per) == 2 and ours["accuracy_seeds"]["mean"] == pytest.approx(sum(per) / 2, abs=1e-3)
    assert ours["accuracy_seeds"]["ci"][0] <= ours["accuracy_seeds"]["mean"] <= ours["accuracy_seeds"]["ci"][1]
    assert ours["n_test"] == 2 * len(test)  # pooled over images x seeds
    c = next(c for c in comparisons(evals, 2) if (c["a"], c["b"], c["round"], c["metric"]) == ("ours", "nl", 2, "accuracy"))
    assert c["n"] == 2 * len(test)  # the discordant pairs of both seeds, pooled


def test_seed_stores_are_the_numbered_seed_folders_in_order(tmp_path):
    "Extra seeds live in `seeds/<seed>/`; another folder there (notes, a copy) is not a seed and is not read."
    import shutil
    from selfsynth.config import preset
    from selfsynth.store import RunStore
    from selfsynth.cli import seed_store
    from selfsynth.report import seed_stores
    store = RunStore(tmp_path / "run", preset("quick", run_dir=str(tmp_path / "run")))
    for s in (10, 2): seed_store(store, s)
    shutil.copytree(store.path("seeds/2"), store.path("seeds/backup"))
    assert [s.cfg.seed for s in seed_stores(store)] == [0, 2, 10]
