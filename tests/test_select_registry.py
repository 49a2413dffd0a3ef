"The selector registry: every selector against a brute force or a hand-made case with a known answer, and the study's rows."
import math
import numpy as np
import pytest, torch
from selfsynth.select import (SELECTORS, select, select_ib, select_cosine, select_class_all, select_random, embed_inputs,
                              infonce_image_scores, infonce_other_class_scores, cosine_scores, study_selections, perfect_rows,
                              selection_vs_n, STUDY_TAUS)
from tests.test_select import random_world, inputs


def dot(vec, a, b): return sum(p * q for p, q in zip(vec[a], vec[b]))


def brute_image(rows, concepts, vec, tau):
    "InfoNCE over images in plain float64: f(X, z) = log mean_d exp(<d, z>/tau); s = f(X, z) - log mean_X' exp f(X', z)."
    f = lambda r, z: math.log(sum(math.exp(dot(vec, d, z) / tau) for d in r["descriptions"]) / len(r["descriptions"]))
    return [[f(r, z) - math.log(sum(math.exp(f(o, z)) for o in rows) / len(rows)) for z in dict.fromkeys(concepts[r["label"]])]
            for r in rows]


def brute_other_class(rows, concepts, vec, tau):
    "The paper's s(z) with negatives from images of other classes only, image by image."
    out = []
    for r in rows:
        negs = [d for o in rows if o["label"] != r["label"] for d in o["descriptions"]]
        scores = []
        for z in dict.fromkeys(concepts[r["label"]]):
            neg = sum(math.exp(dot(vec, z, d) / tau) for d in negs)
            scores.append(sum(math.log(math.exp(dot(vec, d, z) / tau) / (math.exp(dot(vec, d, z) / tau) + neg)) for d in r["descriptions"]))
        out.append(scores)
    return out


def test_registry_names_and_kinds():
    assert list(SELECTORS) == ["infonce", "infonce_image", "infonce_other_class", "cosine", "class_all", "random", "vlm_direct"]
    assert {n for n, s in SELECTORS.items() if s.kind == "reference"} == {"class_all", "random", "vlm_direct"}
    with pytest.raises(KeyError, match="unknown selector 'ib2'"): select("ib2", None)


@pytest.mark.parametrize("tau", [0.1, 0.01])
@pytest.mark.parametrize("chunk", [1, 3, 8192])
def test_variants_match_brute_force(tau, chunk):
    rows, concepts, vec, as_list = random_world(seed=1)
    inp = inputs(rows, concepts, vec)
    for got, want in ((infonce_image_scores(inp, tau, chunk), brute_image(rows, concepts, as_list, tau)),
                      (infonce_other_class_scores(inp, tau, chunk), brute_other_class(rows, concepts, as_list, tau))):
        for g, w in zip(got, want, strict=True): assert g == pytest.approx(w, rel=1e-6, abs=1e-6)
    for first_n in (1, 2):  # the first n descriptions: the same as truncated data
        trunc = [dict(r, descriptions=r["descriptions"][:first_n]) for r in rows]
        for got, want in ((infonce_image_scores(inp, tau, chunk, first_n), brute_image(trunc, concepts, as_list, tau)),
                          (infonce_other_class_scores(inp, tau, chunk, first_n), brute_other_class(trunc, concepts, as_list, tau))):
            for g, w in zip(got, want, strict=True): assert g == pytest.approx(w, rel=1e-6, abs=1e-6)


def test_select_agrees_with_the_old_functions():
    rows, concepts, vec, _ = random_world(seed=4)
    inp = inputs(rows, concepts, vec)
    for tau in STUDY_TAUS: assert select("infonce", inp, tau=tau) == select_ib(inp, tau=tau)
    k = {r["id"]: 1 + i % 3 for i, r in enumerate(rows)}
    assert [r["selected"] for r in select("cosine", inp, k=k)] == [r["selected"] for r in select_cosine(inp, k=k)]
    assert [r["selected"] for r in select("random", inp, k=k, seed=3)] == [r["selected"] for r in select_random(rows, concepts, k, 3)]
    assert [r["selected"] for r in select("class_all", inp)] == [r["selected"] for r in select_class_all(rows, concepts)]
    assert selection_vs_n(inp, ns=(1, 2), method="ib") == {n: select_ib(inp, first_n=n) for n in (1, 2)}
    # the vectorised mean cosine equals the per-image mean of cosines
    for i, s in enumerate(cosine_scores(inp)):
        d = inp.desc_emb[inp.owner == i].double() @ inp.concept_emb[inp.image_concepts(i)].double().T
        assert s == pytest.approx(d.mean(0).tolist(), abs=1e-12)
    with pytest.raises(ValueError, match="needs the set size"): select("random", inp)
    fake = lambda images, qs: ["yes" if "a1" in q or "b2" in q else "no" for q in qs]
    got = select("vlm_direct", inp, ask=fake, images={r["id"]: "x.png" for r in rows})
    assert [r["selected"] for r in got] == [["a1"] if r["label"] == "A" else ["b2"] for r in rows]


def hand_made(dim=12):
    """Class A: four images, each showing the class's crown and a stripe of its own, described by "crown", "stripe"
    and both; Z_A also lists a song nobody mentions. Class B: two images, built the same way. Right answer: {crown, own stripe}."""
    e = torch.eye(dim, dtype=torch.float64)
    vec = {"crown": e[0], "song": e[1], **{f"stripe {i}": e[2 + i] for i in range(4)}, "b crown": e[6], "b song": e[7],
           **{f"b stripe {i}": e[8 + i] for i in range(2)}}
    rows, visible = [], {}
    for c, n in (("A", 4), ("B", 2)):
        p = "" if c == "A" else "b "
        for i in range(n):
            vec[f"{c}{i} both"] = (vec[f"{p}crown"] + vec[f"{p}stripe {i}"]) / math.sqrt(2)
            rows.append(dict(id=f"{c}{i}", label=c, descriptions=[f"{p}crown", f"{p}stripe {i}", f"{c}{i} both"]))
            visible[f"{c}{i}"] = {f"{p}crown", f"{p}stripe {i}"}
    concepts = {"A": ["crown", "song"] + [f"stripe {i}" for i in range(4)], "B": ["b crown", "b song", "b stripe 0", "b stripe 1"]}
    return embed_inputs(rows, concepts, embed_fn=lambda texts: torch.stack([vec[t] for t in texts]).float()), visible


@pytest.mark.parametrize("tau", [0.1, 0.3])
def test_hand_made_case_right_answers(tau):
    inp, visible = hand_made()
    for name in ("infonce_image", "infonce_other_class", "cosine"):
        assert all(set(r["selected"]) == visible[r["id"]] for r in select(name, inp, tau=tau, k=2)), name
    # the paper's estimator: the other A images' crown descriptions are the crown's negatives; the song, never said, wins
    ib = select("infonce", inp, tau=tau, k=2)
    assert all("song" in r["selected"] for r in ib if r["label"] == "A")  # (in B, with one other image, only at small τ)
    s = ib[0]["scores"]
    assert s["song"] > s["crown"] and s["stripe 0"] == max(s.values())
    # InfoNCE over images: crown = log(N / images showing it) > song = 0
    sc = dict(zip(["crown", "song"], infonce_image_scores(inp, tau)[0][:2]))
    assert sc["song"] == pytest.approx(0, abs=1e-9) and sc["crown"] > 0
    assert [r["selected"] for r in select("class_all", inp)][0] == ["crown", "song", "stripe 0", "stripe 1", "stripe 2", "stripe 3"]


def test_one_class_other_class_negatives_empty():
    "With a single class there are no negatives: every term is log 1 = 0."
    rows, concepts, vec, _ = random_world(seed=2)
    rows = [dict(r, label="A") for r in rows]
    assert all(s == [0.0] * 4 for s in infonce_other_class_scores(inputs(rows, {"A": concepts["A"]}, vec), 0.1))


def test_study_rows_sizes_and_random_matching():
    inp, visible = hand_made()
    rows = study_selections(inp, "model", ns=(1, 2, 30), taus=(0.1, 1.0), seed=0)
    keys = {(r["method"], r["tau"], r["n"], r["size"]) for r in rows}
    assert {n for _, _, n, _ in keys} == {1, 2, 3}  # m = 3 is always included, n > m is not
    assert ("cosine", None, 3, "rule") in keys and ("infonce", 0.1, 3, "rule") in keys and ("random", 1.0, 1, "matched") in keys
    assert all(r["describer"] == "model" for r in rows) and len(rows) == len(keys) * len(inp.ids)
    by = {(r["method"], r["tau"], r["n"], r["size"], r["id"]): r["selected"] for r in rows}
    for (m, t, n, size, i), sel in by.items():
        if size == "matched": assert len(sel) == len(by["infonce", t, n, "rule", i])
    assert by["infonce", 0.1, 3, "rule", "A0"] == select_ib(inp, tau=0.1)[0]["selected"]


def test_perfect_describer_writes_from_ground_truth():
    from selfsynth.data import Record
    attrs = dict(crown="red", beak=None, eye=None, head="rounded", wing="brown", wingbar="none", tail=None, breast="buff",
                 belly="white", legs="thin")
    recs = [Record("a", "a.png", "X", "train", attributes=attrs)]
    rows = [dict(id="a", label="X", descriptions=["d"] * 5)]
    got = perfect_rows(recs, rows, seed=0)
    assert len(got[0]["descriptions"]) == 5 and got == perfect_rows(recs, rows, seed=0) and got != perfect_rows(recs, rows, seed=1)
    assert len(set(got[0]["descriptions"])) > 1  # varied wording
    from selfsynth.basemodel import parse_claims
    said = set().union(*(parse_claims(d) for d in got[0]["descriptions"]))
    assert said and all(attrs[p] == v for p, v in said)  # only what is visible, and true
    with pytest.raises(ValueError, match="no ground-truth part values"):
        perfect_rows([Record("a", "a.png", "X", "train")], rows)
