"Synthesize: query pools and sampling, label normalisation, the fuzzy rule and the fallback, the four methods."
import difflib, random
from pathlib import Path
from collections import Counter
import pytest
from PIL import Image
import selfsynth.models as models
from selfsynth.config import preset, DATASETS, METHODS
from selfsynth.store import RunStore, read_jsonl, write_jsonl
from selfsynth.data import Record, write_manifest, write_concepts
from selfsynth.select import SELECTED
from selfsynth.synthesize import (QUERIES, KINDS, sample_kind, rewrite_prompt, normalize_label, contains_label,
                                  label_finder, names_label, check_answer, plan_image, finish_image, synthesize_stage, qa_path)


def test_query_pools():
    nouns = dict(mini="bird", **{"cub-200": "bird", "stanford-dogs": "dog", "fgvc-aircraft": "aircraft",
                                 "ham10000": "skin lesion", "chest-xray": "chest X-ray", "pld": "plant leaf"})
    for d in DATASETS:
        for k in KINDS:
            pool = QUERIES[d][k]
            assert len(set(pool)) >= 20 and not any("{" in q for q in pool)
            assert sum(nouns[d] in q for q in pool) >= 18
    assert QUERIES["stanford-dogs"]["simple"][1] == "What is the breed of this dog?"


@pytest.mark.parametrize("p", [0.4, 0.0, 1.0, 0.7])
def test_query_kind_proportions(p):
    rng, n = random.Random(1), 30_000
    c = Counter(sample_kind(rng, p) for _ in range(n))
    assert abs(c["simple"] / n - p) < 0.012
    assert abs(c["explain"] / n - (1 - p) / 2) < 0.012 and abs(c["cot"] / n - (1 - p) / 2) < 0.012


def test_label_normalisation():
    assert normalize_label("Black-footed  Albatross") == "black footed albatross"
    assert normalize_label("Brewer's_Blackbird") == "brewers blackbird"
    assert normalize_label("Boeing 737-800") == "boeing 737 800"
    assert contains_label("I think it's a BLACK FOOTED albatross!", "Black-footed Albatross")
    assert contains_label("a boeing 737-800, with two engines", "Boeing 737-800")
    assert not contains_label("a boeing 737-300", "Boeing 737-800")
    assert not contains_label("a laysan albatross", "Black-footed Albatross")


ALBATROSSES = label_finder(["Black-footed Albatross", "Laysan Albatross", "Sooty Black-footed Albatross"])


def test_label_rule_nested_names_two_classes_negation_and_punctuation():
    lf = label_finder(["Rufous-breasted Finch", "Spectacled Rufous-breasted Finch", "Golden Finch", "PNEUMONIA", "NORMAL",
                       "737-200", "737-2000", "Black_footed_Albatross", "Brewer's Blackbird", "A340-300"])
    cases = {"This is a Spectacled Rufous-breasted Finch.": "Spectacled Rufous-breasted Finch",
             "A rufous breasted finch, perhaps a Golden Finch.": "Rufous-breasted Finch",  # two classes: the first
             "Not a Golden Finch: a Rufous-breasted Finch.": "Rufous-breasted Finch",  # negated mention names nothing
             "There is no pneumonia.": None, "No evidence of pneumonia here.": None, "Findings suggest pneumonia.": "PNEUMONIA",
             "It isn't a Golden Finch.": None, "a 737-2000": "737-2000", "a 737 200 on the runway": "737-200",
             "a 737-20": None, "an A340-300": "A340-300", "a black-footed albatross": "Black_footed_Albatross",
             "a brewers blackbird": "Brewer's Blackbird", "Golden Finches": None, "": None}
    for text, want in cases.items(): assert lf.predicted(text) == want, text
    assert not names_label("This is a Spectacled Rufous-breasted Finch.", "Rufous-breasted Finch", lf)
    assert contains_label("This is a Spectacled Rufous-breasted Finch.", "Rufous-breasted Finch")  # the substring rule's error


def test_fuzzy_rule_and_fallback():
    label = "Black-footed Albatross"
    lf = ALBATROSSES
    assert check_answer("  This Black-footed Albatross has dark wings. ", label, lf) == ("This Black-footed Albatross has dark wings.", "kept")
    near = "Blackfooted albatros"
    ratio = difflib.SequenceMatcher(None, "black footed albatross", "blackfooted albatros").ratio()
    assert ratio >= 0.7
    assert check_answer(near, label, lf) == (f"{near}. More specifically, this image shows {label}.", "fuzzy")
    assert check_answer(near, label, lf, fuzzy_ratio=ratio + 1e-9) == (None, "fallback")  # the threshold is >=
    assert check_answer(near, label, lf, fuzzy_ratio=ratio)[1] == "fuzzy"
    # a near-miss inside a long answer has a low ratio to the whole answer: fallback (the public code's rule)
    assert check_answer("The bird in the picture looks like a blackfooted albatros with dark wings.", label, lf)[1] == "fallback"
    assert check_answer("", label, lf) == (None, "fallback")
    sel = dict(id="x", label=label, selected=["dark wings", "pale beak", "white face ring"])
    plans = plan_image(sel, sel["selected"] + ["flies far"], "ours", "cub-200", 3, 0.0, seed=0)
    rows = finish_image(sel, "/x.png", plans, ["A gull.", near, "Black-footed albatross!"], "ours", "cub-200", 0.7, 0, lf)
    assert [r["source"] for r in rows] == ["fallback", "fuzzy", "kept"]
    assert rows[0]["answer"] == f"This is an image of {label}." and rows[0]["kind"] == "simple"
    assert rows[0]["question"] in QUERIES["cub-200"]["simple"] and rows[1]["kind"] in ("explain", "cot")


def test_plans_per_method():
    zc = ["z1", "z2", "z3", "z4", "z5", "z6"]
    sel = dict(id="img7", label="Tern", selected=["z4", "z2", "z6"])
    ours = plan_image(sel, zc, "ours", "mini", 8, 0.4, seed=3)
    assert ours == plan_image(sel, zc, "ours", "mini", 8, 0.4, seed=3) and ours != plan_image(sel, zc, "ours", "mini", 8, 0.4, seed=4)
    for p in ours:
        assert p["prompt"] == rewrite_prompt("Tern", ["z4", "z2", "z6"], p["question"])
        assert p["question"] in QUERIES["mini"][p["kind"]]
    assert all("- z5" in p["prompt"] and "- z1" in p["prompt"] for p in plan_image(sel, zc, "lge", "mini", 4, 0.4, 0))
    nof = plan_image(sel, zc, "ours_nofilter", "mini", 4, 0.4, 0)
    feats = [l[2:] for l in nof[0]["prompt"].splitlines() if l.startswith("- ")]
    assert len(feats) == 3 and set(feats) <= set(zc) and all(p["prompt"] == rewrite_prompt("Tern", feats, p["question"]) for p in nof)
    nl = plan_image(sel, zc, "nl", "mini", 4, 0.4, 0)
    assert all(p["prompt"] is None and p["kind"] == "simple" for p in nl)
    with pytest.raises(ValueError, match="unknown method"): plan_image(sel, zc, "best", "mini", 1, 0.4, 0)


def make_run(run_dir, model="unused", **over):
    "A run folder with four training squares of two classes, their concepts and a hand-written selection."
    cfg = preset("quick", model=str(model), device="cpu", synth_answers=6, **over)
    store = RunStore(run_dir, cfg)
    (run_dir / "world/images").mkdir(parents=True)
    concepts = {"Red Finch": ["red crown", "short beak", "brown wings", "sings at dawn"], "Blue Jay": ["blue crest", "white belly", "long tail"]}
    recs = []
    for i in range(4):
        Image.new("RGB", (16, 16), (200, 40, 40) if i % 2 == 0 else (40, 40, 200)).save(run_dir / f"world/images/{i}.png")
        recs.append(Record(f"img{i}", f"images/{i}.png", "Red Finch" if i % 2 == 0 else "Blue Jay", "train"))
    write_manifest(recs, run_dir / "world/manifest.jsonl"); write_concepts(concepts, run_dir / "world/concepts.json")
    write_jsonl(run_dir / SELECTED, [dict(id=r.id, label=r.label, selected=concepts[r.label][:2]) for r in recs])
    return store


def scripted_generate(prompts_seen):
    "Answers by the question's position: label / near-miss / wrong, so that every rule fires."
    def gen(model, processor, images, questions, *, n=1, **kw):
        out = []
        for k, q in enumerate(questions):
            prompts_seen.append(q)
            label = q.split("This is a picture of a ", 1)[1].split(" with the following", 1)[0]
            out.append([[f"It is a {label}, see its features.", label.lower().replace(" ", "")[:-1], "No idea."][k % 3]] * n)
        return out
    return gen


def test_stage_methods_and_counts(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(models, "generate", scripted_generate(seen))
    monkeypatch.setattr(models, "load_vlm", lambda *a, **k: (None, None))
    store = make_run(tmp_path / "run")
    m = synthesize_stage(store, "ours", chunk_images=3)
    rows = read_jsonl(store.path("round-1/qa.jsonl"))
    assert len(rows) == 4 * 6 and all(set(r) - {"rewrite", "rewrite_kind"} == {"id", "image", "question", "answer", "label", "kind", "source"} for r in rows)
    # a rewrite the label check replaced keeps the model's text and kind (measured by 05_basemodel)
    assert all(("rewrite" in r) == (r["source"] in ("fuzzy", "fallback")) for r in rows)
    assert all(r["question"] in QUERIES["mini"][r["kind"]] for r in rows)  # the bare question, no preamble
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).parent == (tmp_path / "run/world/images").resolve() for r in rows)
    c = m["counts"]
    assert c["pairs"] == 24 and c["source_kept"] + c["source_fuzzy"] + c["source_fallback"] == 24
    assert c["source_fallback"] == 8 and c["rewrite_label_rate"] == pytest.approx(c["source_kept"] / 24, abs=1e-4)
    lf = label_finder({r["label"] for r in rows})
    assert all(names_label(r["answer"], r["label"], lf) for r in rows)  # every kept pair names the label
    assert "- red crown\n- short beak\n" in seen[0] and "sings at dawn" not in seen[0]

    seen.clear(); synthesize_stage(store, "lge")
    assert all("- sings at dawn" in q for q in seen if "Red Finch" in q)

    nl = synthesize_stage(store, "nl")["counts"]
    nl_rows = read_jsonl(store.path(qa_path("nl")))
    assert nl["source_template"] == 24 and all(r["answer"] == f"This is a {r['label']}." and r["kind"] == "simple" for r in nl_rows)
    assert qa_path("nl") == "baselines/nl/round-1/qa.jsonl"

    seen.clear(); nof = synthesize_stage(store, "ours_nofilter")["counts"]
    raw = read_jsonl(store.path(qa_path("ours_nofilter")))
    assert nof["source_raw"] == 24 and sum(r["answer"] == "No idea." for r in raw) == 8  # wrong answers kept
    assert all(len([l for l in q.splitlines() if l.startswith("- ")]) == 2 for q in seen)  # as many concepts as Z*


def test_stage_with_a_real_random_llava(tmp_path):
    "The real path: a random model's rewrites do not name the label, so every pair falls back; the stage then resumes."
    tiny = models.make_random_llava(tmp_path / "tiny")
    store = make_run(tmp_path / "run", model=tiny, synth_max_new_tokens=4)
    m = synthesize_stage(store, "ours", chunk_images=2)
    rows = read_jsonl(store.path(qa_path("ours")))
    assert len(rows) == 24 and m["counts"]["source_fallback"] == 24 and m["counts"]["rewrite_label_rate"] == 0.0
    assert all(r["answer"] == f"This is an image of {r['label']}." for r in rows)
    assert synthesize_stage(store, "ours")["finished"] == m["finished"]
