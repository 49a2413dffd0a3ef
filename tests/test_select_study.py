"The selection study on the quick world: both describers stored by the stage, scored, compared and keyed for results.json."
import numpy as np
import pytest


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from selfsynth import basemodel as bm
    from selfsynth.config import preset
    from selfsynth.data import read_manifest
    from selfsynth.select import selection_study_stage
    from selfsynth.store import RunStore, write_jsonl
    from selfsynth.world import world_stage
    store = RunStore(tmp_path_factory.mktemp("study") / "run", preset("quick", device="cpu"))
    world_stage(store)
    train = read_manifest(store.path("world/manifest.jsonl"), split="train")
    rng = np.random.default_rng(1)  # a describer that states one wrong part value in every other description
    def noisy(r):
        d = bm.describe_text(r.attributes, rng)
        return d if rng.random() < .5 else d + " It also has a long, narrow tail."
    write_jsonl(store.path("round-1/descriptions.jsonl"), [dict(id=r.id, label=r.label, descriptions=[noisy(r) for _ in range(6)]) for r in train])
    m = selection_study_stage(store, ns=(1, 2, 5), direct=False)
    return store, m, train


def test_stage_stores_both_describers(study):
    from selfsynth.select import STUDY, PERFECT, STUDY_TAUS
    from selfsynth.store import read_jsonl
    store, m, train = study
    c = m["counts"]
    assert c["describers"] == ["model", "perfect"] and c["ns"] == [1, 2, 5, 6] and c["images"] == len(train)
    rows = read_jsonl(store.path(STUDY))
    perfect = read_jsonl(store.path(PERFECT))
    assert [r["id"] for r in perfect] == [r.id for r in train] and all(len(r["descriptions"]) == 6 for r in perfect)
    keys = {(r["method"], r["describer"], r["tau"], r["n"], r["size"]) for r in rows}
    assert ("infonce_image", "perfect", 0.01, 6, "matched") in keys and ("class_all", None, None, 6, "all") in keys
    assert {k[2] for k in keys if k[0] == "infonce"} == set(STUDY_TAUS)
    assert selection_study_stage_cached(store) == m["finished"]


def selection_study_stage_cached(store):
    from selfsynth.select import selection_study_stage
    return selection_study_stage(store, ns=(1, 2, 5), direct=False)["finished"]


def test_scored_compared_and_keyed(study):
    from selfsynth.report import (concept_kinds, visible_map, study_table, selection_study, selection_comparisons,
                                  selection_verdicts, study_json, selection_components)
    from selfsynth.select import STUDY
    from selfsynth.store import read_jsonl
    store, _, train = study
    kinds = concept_kinds(store)
    assert set(kinds.values()) == {"class", "generic", "nonvisual"}
    table = study_table(read_jsonl(store.path(STUDY)), visible_map(store), kinds, store.cfg.tau)
    frame = selection_study(table)
    ca = frame[frame.selector == "class_all"]
    assert list(ca.describer) == ["model", "perfect"] and (ca.recall == 1.0).all() and (ca.images == len(train)).all()
    # class_all's non-visual share is the base rate of non-visual concepts in the class lists
    from selfsynth.data import read_concepts
    concepts = read_concepts(store.path("world/concepts.json"))
    base = np.mean([sum(kinds[z] == "nonvisual" for z in concepts[r.label]) / len(concepts[r.label]) for r in train])
    assert ca.non_visual_share.iloc[0] == pytest.approx(base)
    matched = frame[(frame["size"] == "matched") & (frame.n == 6) & (frame.tau == 0.1)].set_index(["describer", "selector"])
    infonce = frame[(frame.selector == "infonce") & (frame.n == 6) & (frame.tau == 0.1)].set_index("describer")
    for d in ("model", "perfect"):
        assert matched.loc[(d, "random"), "set_size"] == pytest.approx(infonce.loc[d, "set_size"])
    comps = selection_comparisons(table, store.cfg.tau)
    assert {c["describer"] for c in comps} == {"model", "perfect"}
    assert len([c for c in comps if c.get("rise")]) == 2 * 4  # every estimator, both describers
    assert all(0 <= c["p"] <= c["p_holm"] <= 1 for c in comps)
    v = selection_verdicts(comps)
    assert set(v) == {"model", "perfect"} and set(v["model"]) == {"beats_class_all", "beats_random", "rises_with_n", "falls_with_n"}
    j = study_json(frame, comps, v)
    cell = j["study"]["infonce_image"]["perfect"]["0.01"]["6"]
    assert set(cell) >= {"precision", "precision_specific", "recall", "non_visual_share", "set_size", "ci"}
    assert j["study"]["class_all"]["model"]["1"]["2"] == j["study"]["class_all"]["model"]["0.3"]["6"]  # repeated over τ and n
    assert j["study_matched"]["random"]["model"]["0.1"]["6"]["set_size"] == j["study"]["infonce"]["model"]["0.1"]["6"]["set_size"]
    from selfsynth.report import choose_selector
    ch = choose_selector(table, store.cfg.tau, "precision")
    assert ch["chosen"] in ("infonce", "infonce_image", "infonce_other_class", "cosine") and sum(ch["images"]) == len(train)
    assert ch["choice_half"][ch["chosen"]] == max(v for v in ch["choice_half"].values() if v is not None)
    assert choose_selector(table, store.cfg.tau, "precision", seed=1)["report_half"] != ch["report_half"]  # another half
    c4 = selection_components(store)
    assert [c["what"] for c in c4] == ["InfoNCE (m) vs class_all", "InfoNCE (m) vs random", "InfoNCE (6) vs InfoNCE (1)"]
    assert all(c["p"] is not None for c in c4)
    # a run whose τ the study did not cover: C4 has nothing to test (inconclusive), no max() of nothing
    from selfsynth.store import RunStore
    other_tau = RunStore(store.root, store.cfg.replace(tau=0.5))
    assert [(c["difference"], c["p"]) for c in selection_components(other_tau)] == [(None, None)]


def test_another_grid_is_another_study(study):
    "The stage's key covers its n and τ grid: asking for another grid runs the study again; the same grid reads it back."
    from selfsynth.select import STUDY, selection_study_stage
    from selfsynth.store import read_jsonl
    store, m, _ = study
    other = selection_study_stage(store, ns=(1, 2), taus=(0.1,), direct=False)
    assert other["finished"] != m["finished"] and other["counts"]["taus"] == [0.1]
    assert {r["tau"] for r in read_jsonl(store.path(STUDY)) if r["method"] == "infonce"} == {0.1}
    again = selection_study_stage(store, ns=(1, 2, 5), direct=False)  # the fixture's grid: run again, not stale
    assert again["finished"] != other["finished"] and again["counts"]["ns"] == m["counts"]["ns"]
