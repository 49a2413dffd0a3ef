"Tests of step 3 (selfsynth.rejection): r(b), negatives with/without Z*, best-of-k and fallback, resume."
import math, random
from pathlib import Path
import pytest, torch
from PIL import Image
from selfsynth.config import preset
from selfsynth.store import RunStore, read_jsonl, write_jsonl
from selfsynth.data import Record, write_manifest, write_concepts
from selfsynth.select import SELECTED
from selfsynth.models import make_random_llava
import selfsynth.models as models
from selfsynth.rejection import (answer_scores, score_candidates, choose, image_queries, query_rng, rejection_stage,
                                 RS_KINDS)
from selfsynth.layout import candidates_path, qa_path, round_dir
from selfsynth.synthesize import label_finder

def brute_r(b, zstar, negatives, tau):
    "METHOD.md's r(b), term by term in float64 Python floats."
    dot = lambda u, v: sum(float(x) * float(y) for x, y in zip(u, v))
    neg = sum(math.exp(dot(b, c) / tau) for c in negatives)
    return sum(math.log(math.exp(dot(z, b) / tau) / (math.exp(dot(z, b) / tau) + neg)) for z in zstar)

@pytest.mark.parametrize("tau", [0.1, 0.05, 0.01])
def test_score_matches_brute_force(tau):
    g = torch.Generator().manual_seed(0)
    C = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    B = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=1)
    B[0] = C[1]  # cosine 1 with a concept: exp(100) at tau = 0.01 overflows float32
    zs = [[1, 2], [0], [3, 4, 5], [6]]
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for i, z in enumerate(zs): mask[i, z] = True
    got = answer_scores(B, C, mask, tau, chunk=3)  # chunks of 3 rows: crosses a chunk boundary
    got_bug = answer_scores(B, C, mask, tau, include_selected=True)
    for i, z in enumerate(zs):
        want = brute_r(B[i], C[z], [C[j] for j in range(7) if j not in z], tau)
        want_bug = brute_r(B[i], C[z], list(C), tau)
        assert math.isfinite(got[i]) and abs(got[i] - want) < 1e-9 * max(1, abs(want))
        assert abs(got_bug[i] - want_bug) < 1e-9 * max(1, abs(want_bug))
        assert got_bug[i] <= got[i]  # including Z* among the negatives can only lower r(b)
    assert got[0] - got_bug[0] > 0.5  # and does, a lot, for an answer close to its Z*

def test_selected_excluded_from_negatives_by_default():
    "With real text embeddings: the flag changes the scores, and can change which candidate is best."
    concepts = {"Red Finch": ["red crown", "short conical beak", "brown wings"], "Blue Jay": ["blue crest", "white belly"]}
    enc = models.load_text_encoder(device="cpu")
    from selfsynth.select import embed_texts
    emb = lambda t: embed_texts(enc, t)
    answers = ["A finch with a red crown and a short conical beak.", "A small bird with brown wings.", "A blue crested jay."]
    zs = [["red crown", "short conical beak"]] * 3
    intent = score_candidates(answers, zs, concepts, emb, 0.1)
    bug = score_candidates(answers, zs, concepts, emb, 0.1, include_selected=True)
    assert intent[0] == max(intent) and all(b < a for a, b in zip(intent, bug))
    assert max(abs(a - b) for a, b in zip(intent, bug)) > 0.1
    with pytest.raises(ValueError, match="'green tail' is in no class"):
        score_candidates(answers[:1], [["green tail"]], concepts, emb, 0.1)

RF = label_finder(["Red Finch", "Spectacled Red Finch"])

def test_best_of_three_and_fallback():
    c = lambda *pairs: [dict(answer=a, score=s) for a, s in pairs]
    rng = random.Random(0)
    # best (highest score) names the label -> kept, even though another candidate also names it
    p = choose(c(("Red Finch, red crown", -4.0), ("Red Finch: red crown, short beak", -1.5), ("a bird", -2.0)),
               "Q?", "cot", "Red Finch", "ours", "mini", rng, RF)
    assert (p["answer"], p["source"], p["pick"], p["kind"], p["question"]) == ("Red Finch: red crown, short beak", "best", 1, "cot", "Q?")
    # best misses the label -> fallback, although a lower-scoring candidate has it (no second choice)
    p = choose(c(("Red Finch", -4.0), ("a sparrow with a red crown", -0.5), ("a bird", -2.0)), "Q?", "explain", "Red Finch", "lge", "mini", rng, RF)
    assert p["source"] == "fallback" and p["answer"] == "This is an image of Red Finch." and p["kind"] == "simple" and p["question"] != "Q?"
    # normalised label: case and hyphens
    p = choose(c(("a RED-FINCH indeed", 0.0), ("x", -1.0)), "Q?", "explain", "Red Finch", "ours", "mini", rng, RF)
    assert p["source"] == "best"
    # the best names another class that contains the label: fallback
    p = choose(c(("a Spectacled Red Finch", 0.0), ("Red Finch", -1.0)), "Q?", "explain", "Red Finch", "ours", "mini", rng, RF)
    assert p["source"] == "fallback"
    # ties go to the first sample
    assert choose(c(("Red Finch a", -1.0), ("Red Finch b", -1.0)), "Q?", "cot", "Red Finch", "ours", "mini", rng, RF)["pick"] == 0
    # no filter: a random candidate, label or not, every position reachable
    picks = {choose(c(("x", 9.0), ("y", -9.0), ("z", 0.0)), "Q?", "cot", "Red Finch", "ours_nofilter", "mini", random.Random(s), RF)["pick"]
             for s in range(30)}
    assert picks == {0, 1, 2}

def test_queries_explain_or_cot():
    kinds = [k for s in range(200) for k, _ in image_queries("mini", 8, random.Random(s))]
    assert set(kinds) == set(RS_KINDS) and abs(kinds.count("explain") / len(kinds) - 0.5) < 0.05
    assert image_queries("mini", 8, query_rng(0, "ours", 2, "a")) == image_queries("mini", 8, query_rng(0, "ours", 2, "a"))

def _world(root: Path, model_src: Path, method="ours", k=2):
    cfg = preset("quick", device="cpu", rs_queries=2, rs_samples=3, rs_max_new_tokens=6, gen_batch_size=4)
    store = RunStore(root, cfg)
    (root / "world/images").mkdir(parents=True)
    concepts = {"Red Finch": ["red crown", "short beak", "brown wings"], "Blue Jay": ["blue crest", "white belly", "long tail"]}
    recs = []
    for i, (label, rgb) in enumerate([("Red Finch", (200, 40, 40)), ("Blue Jay", (40, 40, 200))] * 3):
        Image.new("RGB", (32, 32), rgb).save(root / f"world/images/{i}.png")
        recs.append(Record(f"img{i}", f"images/{i}.png", label, "train"))
    write_manifest(recs, root / "world/manifest.jsonl"); write_concepts(concepts, root / "world/concepts.json")
    write_jsonl(root / SELECTED, [dict(id=r.id, label=r.label, selected=concepts[r.label][:2]) for r in recs])
    import shutil; shutil.copytree(model_src, root / round_dir(method, k - 1) / "merged")
    return store

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_random_llava(tmp_path_factory.mktemp("m") / "tiny")

def test_killed_stage_resumes(tiny, tmp_path, monkeypatch):
    real, calls = models.generate, []
    def flaky(*a, **kw):
        calls.append(len(a[2]))
        if len(calls) == 2 and kill[0]: raise KeyboardInterrupt("killed")
        return real(*a, **kw)
    monkeypatch.setattr(models, "generate", flaky)
    kill = [True]
    store = _world(tmp_path / "run", tiny)
    with pytest.raises(KeyboardInterrupt): rejection_stage(store, "ours", 2, chunk_images=2)
    parts = list((tmp_path / "run/round-2").glob(".candidates.jsonl.*.parts/*.jsonl"))
    assert len(parts) == 1 and not (tmp_path / "run" / candidates_path("ours", 2)).exists()
    kill[0] = False; calls.clear()
    m = rejection_stage(store, "ours", 2, chunk_images=2)
    assert len(calls) == 2  # chunks 2 and 3 only; chunk 1 was kept
    resumed = read_jsonl(tmp_path / "run" / candidates_path("ours", 2))
    assert len(resumed) == 6 * 2 * 3 and m["counts"]["pairs"] == 12
    # identical to an uninterrupted run
    fresh = _world(tmp_path / "fresh", tiny)
    rejection_stage(fresh, "ours", 2, chunk_images=2)
    assert read_jsonl(tmp_path / "fresh" / candidates_path("ours", 2)) == resumed
    calls.clear(); rejection_stage(store, "ours", 2, chunk_images=2); assert calls == []  # finished: skipped

def test_stage_keeps_best_labelled_candidate(tiny, tmp_path, monkeypatch):
    "Controlled answers: per query the stage keeps the top-scoring one when it names the label, else falls back."
    def fake(model, processor, images, questions, *, n=1, **kw):
        return [["The Red Finch shows a red crown and a short beak.", "A bird.", "Blue Jay: blue crest, white belly, long tail."]
                for _ in questions]
    monkeypatch.setattr(models, "generate", fake)
    store = _world(tmp_path / "run", tiny)
    m = rejection_stage(store, "ours", 2)
    cands, qa = read_jsonl(tmp_path / "run" / candidates_path("ours", 2)), read_jsonl(tmp_path / "run" / qa_path("ours", 2))
    assert len(qa) == 12 and m["counts"]["candidates"] == 36
    for row in qa:
        group = [c for c in cands if c["id"] == row["id"] and c["question"] == row["question"]]
        if row["source"] == "best":
            best = max(group, key=lambda c: c["score"])
            assert row["answer"] == best["answer"] and best["has_label"]
        else:
            assert row["source"] == "fallback" and row["answer"] == f"This is an image of {row['label']}."
    # each class's own answer wins for its images, so finches keep an answer and jays too
    assert {r["label"] for r in qa if r["source"] == "best"} == {"Red Finch", "Blue Jay"}
    assert m["counts"]["source_best"] == 12 and Path(qa[0]["image"]).is_absolute()
