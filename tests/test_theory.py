"Tests of the theory checks: each passes on its defaults and fails when its assumption is broken on purpose."
import itertools, json, math
import numpy as np
import pytest, torch
from scipy.special import xlogy
from selfsynth.config import preset
from selfsynth.data import write_manifest, write_concepts
from selfsynth.store import RunStore, write_jsonl, read_json
from selfsynth import theory as T

# --- statistics ---------------------------------------------------------------------------------------------

def test_paired_trend_sees_rise_and_drop():
    rng = np.random.default_rng(1)
    flat_then_drop = np.concatenate([np.full((50, 4), 0.5), np.full((50, 1), 0.3)], 1) + 0.05 * rng.standard_normal((50, 5))
    t = T.paired_trend(flat_then_drop)
    assert t["drops"] == [3] and t["rise_hi"] < 0
    noise = 0.05 * rng.standard_normal((50, 30))  # a flat curve: no step is a significant drop
    assert T.paired_trend(noise)["drops"] == []

# --- check 2: InfoNCE ---------------------------------------------------------------------------------------

FAST = dict(ns=(2, 16, 128), samples=2 ** 12)

def test_infonce_passes_with_iid_negatives_and_optimal_critic():
    r = T.infonce_check(**FAST)
    assert r["passed"], r["criteria"]
    low, mid, high = r["details"]["curves"]
    assert all(e <= low["mi"] + 3 * s for e, s in zip(low["est"], low["se"]))
    assert abs(high["est"][-1] - math.log(128)) < 0.05  # MI = 16.6 nats >> log N: saturates at log N

def test_infonce_never_exceeds_log_n():
    est = T.infonce_gaussian(0.99, 10, 32, 20, np.random.default_rng(0))
    assert (est <= math.log(32) + 1e-9).all()

@pytest.mark.parametrize("kw, broken", [
    (dict(negatives="correlated"), "tight"),   # negatives resemble the positive: the estimate collapses
    (dict(negatives="shifted"), "bound"),      # negatives not from p(y): the estimate exceeds the true MI
    (dict(critic=lambda x, y, rho: 0.5 * T.gaussian_critic(x, y, rho)), "tight"),  # not the density ratio: loose
])
def test_infonce_fails_when_assumption_broken(kw, broken):
    r = T.infonce_check(**FAST, **kw)
    assert not r["passed"] and not r["criteria"][broken]

def test_infonce_control_critic_fails():
    r = T.with_control(T.infonce_check(**FAST), T.infonce_check(**FAST, critic=T.constant_gaussian_critic), "constant critic")
    assert r["passed"] and r["control_passed"] is False and r["control_measured"] == 1.0 and r["control"] == "constant critic"

# --- check 2b: InfoNCE with the method's critic ---------------------------------------------------------------

def test_method_critic_world_mi_is_exact():
    w = T.method_critic_world(concepts=4, eps=0.0)
    assert w["mi"] == pytest.approx(math.log(4))  # descriptions name their concept: I = H(Z)
    w = T.method_critic_world(concepts=4, eps=1.0)
    assert w["mi"] == pytest.approx(0, abs=1e-12)  # descriptions ignore their concept
    w = T.method_critic_world(concepts=5, eps=0.3)
    p = w["p"]
    joint = p / 5
    assert w["mi"] == pytest.approx(float((joint * np.log(joint / (joint.sum(0) * joint.sum(1)[:, None]))).sum()))

def test_method_critic_tight_at_run_tau_and_control_fails():
    fast = dict(ns=(2, 16, 128, 1024), samples=2 ** 12)
    r = T.infonce_method_check(0.1, **fast)
    assert r["passed"], r["criteria"]
    c = T.infonce_method_check(0.1, critic=T.constant_critic, **fast)
    assert not c["passed"] and c["measured"] == 1.0 and not c["criteria"]["tight"]
    assert not T.infonce_method_check(0.01, **fast)["passed"]  # cosine / 0.01 overshoots the log ratio: far from tight

# --- check 3: data processing -------------------------------------------------------------------------------

def _brute_mi_z_d(chain, n):
    "I(z_k; D^n) by enumerating every hidden state (x, y) and every sequence of n descriptions (independent of chain_mi's count-vector sum)."
    px, py, q, pd = chain["px"], chain["py"], chain["q"], chain["pd"]
    (X, Y, V), K = pd.shape, q.shape[0]
    out = []
    for k in range(K):
        joint = {}  # (z, sequence) -> probability
        for x, y in itertools.product(range(X), range(Y)):
            p_s, pz1 = px[x] * py[x, y], q[k, x, y]
            for seq in itertools.product(range(V), repeat=n):
                p_seq = np.prod([pd[x, y, d] for d in seq])
                for z, pz in ((1, pz1), (0, 1 - pz1)):
                    joint[z, seq] = joint.get((z, seq), 0) + p_s * pz * p_seq
        pz = {z: sum(v for (zz, _), v in joint.items() if zz == z) for z in (0, 1)}
        pseq = {}
        for (z, seq), v in joint.items(): pseq[seq] = pseq.get(seq, 0) + v
        out.append(sum(v * math.log(v / (pz[z] * pseq[seq])) for (z, seq), v in joint.items() if v > 0))
    return np.array(out)

@pytest.mark.parametrize("make,leak", [(T.random_chain, 0.0), (T.random_chain, 0.6), (T.class_chain, 0.0), (T.class_chain, 0.6)])
def test_chain_mi_matches_brute_force(make, leak):
    chain = make(np.random.default_rng(3), states=3, tokens=3, concepts=3, leak=leak)
    m = T.chain_mi(chain, [1, 3])
    for i, n in enumerate([1, 3]):
        np.testing.assert_allclose(m["i_zd"][i], _brute_mi_z_d(chain, n), atol=1e-10)
    qx = (chain["q"] * chain["py"][None]).sum(-1)  # p(z_k = 1 | x)
    pz = qx @ chain["px"]
    h = -xlogy(pz, pz) - xlogy(1 - pz, 1 - pz)
    hzx = (-xlogy(qx, qx) - xlogy(1 - qx, 1 - qx)) @ chain["px"]
    np.testing.assert_allclose(m["i_zx"], h - hzx, atol=1e-12)

def test_data_processing_passes_on_valid_chains():
    r = T.data_processing_check()
    assert r["passed"], r["criteria"]
    assert r["measured"] <= 1e-9
    sp = r["details"]["spearman"]["mean"]
    assert sp[-1] > sp[0] + 0.2

def test_data_processing_fails_on_broken_chain():
    r = T.data_processing_check(leak=0.8)  # descriptions read concept 0 directly: D is not independent of Z given X
    assert not r["passed"] and not r["criteria"]["bound"] and r["measured"] > 0.1
    assert not r["criteria"]["level"]

def test_data_processing_fails_when_the_describer_names_the_class():
    "The report's control: a describer that knows the class beyond the image breaks the bound; the same chains without the leak keep it."
    r = T.data_processing_check(leak=0.8, make=T.class_chain)
    assert not r["passed"] and not r["criteria"]["bound"] and r["measured"] > 0.05
    ok = T.data_processing_check(make=T.class_chain)
    assert ok["criteria"]["bound"] and ok["measured"] <= 1e-9

# --- check 1: consistency -----------------------------------------------------------------------------------

NS = (1, 2, 5, 10, 20, 30)

def test_consistency_passes_when_descriptions_view_the_image():
    rows, recs, cons, embed_fn = T.synthetic_descriptions()
    r = T.consistency_check(*T.consistency_inputs(rows, recs, cons, embed_fn), ns=NS)
    assert r["passed"], r["criteria"]
    d = r["details"]
    assert d["agreement"]["mean"][-1] > d["chance"][-1] + 0.2
    assert d["precision"]["mean"][-1] > d["precision"]["mean"][0]

def test_consistency_fails_when_descriptions_ignore_the_image():
    rows, recs, cons, embed_fn = T.synthetic_descriptions(ignore_image=True)
    r = T.consistency_check(*T.consistency_inputs(rows, recs, cons, embed_fn), ns=NS)
    assert not r["passed"] and not r["criteria"]["image_specific"] and not r["criteria"]["above_chance"]

def test_consistency_threshold_is_chance_and_control_fails():
    "The threshold is the agreement of a random subset of the same size; another image's descriptions fail the check."
    rows, recs, cons, embed_fn = T.synthetic_descriptions()
    inp, ref, visible = T.consistency_inputs(rows, recs, cons, embed_fn)
    r = T.consistency_check(inp, ref, visible, ns=NS)
    assert r["threshold"] == pytest.approx(r["details"]["chance"][-1]) and r["measured"] > r["threshold"]
    assert r["criteria"]["separates"] and r["details"]["auc_ci"][0] > 0.5
    swapped = T.swap_descriptions(inp, seed=3)
    assert sorted(swapped.owner.tolist()) == sorted(inp.owner.tolist())
    assert all(not torch.equal(swapped.desc_emb[swapped.owner == i], inp.desc_emb[inp.owner == i]) for i in range(len(inp.ids)))
    c = T.consistency_check(swapped, ref, visible, ns=NS)
    assert not c["passed"] and not c["criteria"]["above_chance"] and not c["criteria"]["separates"]
    assert c["details"]["auc"] < r["details"]["auc"] - 0.2

def test_auc():
    assert T._auc({"a": 3.0, "b": 1.0, "c": 2.0}, {"a", "c"}) == 1.0
    assert T._auc({"a": 1.0, "b": 1.0}, {"a"}) == 0.5 and T._auc({"a": 1.0}, {"a"}) is None

def test_consistency_reference_is_the_perfect_description():
    rows, recs, cons, embed_fn = T.synthetic_descriptions()
    inp, ref, visible = T.consistency_inputs(rows, recs, cons, embed_fn)
    assert ref.ids == [r.id for r in recs] and len(ref.desc_emb) == len(recs)  # one perfect description per image
    assert T.perfect_description(["a red crown", "two thin legs"]) == "The bird has a red crown, two thin legs."
    r = T.consistency_check(inp, ref, visible, ns=(1, 30))
    assert r["details"]["reference_precision"] > 0.9  # S* (the rule on perfect descriptions) is nearly all visible
    with pytest.raises(ValueError, match="visible"):
        T.consistency_inputs(rows, [r.__class__(r.id, r.image, r.label, r.split) for r in recs], cons, embed_fn)

# --- check 4: best-of-k -------------------------------------------------------------------------------------

def _brute_best_of_k(scores, quality, correct, k):
    "Average over all k-subsets, ties broken uniformly at random; with the label filter."
    plain, kept_q, fallback = [], [], 0
    for sub in itertools.combinations(range(len(scores)), k):
        top = max(scores[i] for i in sub)
        best = [i for i in sub if scores[i] == top]
        plain.append(np.mean([quality[i] for i in best]))
        ok = [i for i in best if correct[i]]  # the pick is uniform among the tied best; kept only if correct
        fallback += 1 - len(ok) / len(best)
        if ok: kept_q.append((np.mean([quality[i] for i in ok]), len(ok) / len(best)))
    n = math.comb(len(scores), k)
    fq = sum(q * w for q, w in kept_q) / sum(w for _, w in kept_q) if kept_q else float("nan")
    return np.mean(plain), fq, fallback / n

def test_best_of_k_expectation_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = int(rng.integers(2, 7))
        s, q, c = rng.integers(0, 3, K).astype(float), rng.random(K), rng.random(K) < 0.6  # ties on purpose
        c[0] = True
        for k in range(1, K + 1):
            bq, fq, fb = _brute_best_of_k(s, q, c, k)
            assert abs(T.best_of_k(s, q, k) - bq) < 1e-12
            got_q, got_fb = T.best_of_k_filtered(s, q, c, k)
            assert abs(got_fb - fb) < 1e-12
            if not math.isnan(fq): assert abs(got_q - fq) < 1e-12

def test_best_of_k_passes_when_score_tracks_grounding():
    r = T.best_of_k_check(*T.synthetic_candidates())
    assert r["passed"] and r["measured"] > 0.05

def test_best_of_k_fails_when_score_ignores_grounding():
    r = T.best_of_k_check(*T.synthetic_candidates(coupling=0.0))
    assert not r["passed"] and not r["criteria"]["rises"]

def test_best_of_k_random_chooser_control_fails():
    rows, kept = T.synthetic_candidates()
    shuffled = T.random_chooser(rows, seed=0)
    assert sorted(r["score"] for r in shuffled) == sorted(r["score"] for r in rows) and [r["quality"] for r in shuffled] == [r["quality"] for r in rows]
    c = T.best_of_k_check(shuffled)
    assert T.best_of_k_check(rows, kept)["passed"] and not c["passed"] and not c["criteria"]["rises"]

def test_best_of_k_fails_without_label_filter():
    r = T.best_of_k_check(*T.synthetic_candidates(label_filter=False))
    assert not r["passed"] and not r["criteria"]["kept_correct"] and r["criteria"]["rises"]

def test_best_of_k_bad_rows():
    with pytest.raises(ValueError, match="'quality'"):
        T.best_of_k_check([dict(group=0, score=1.0, correct=True)])

# --- on a run folder ----------------------------------------------------------------------------------------

def _quality(answers, records, labels):
    "Grounded precision for the test run: share of the answer's 'claims' (phrases after ';') that are visible."
    out = []
    for a, v in zip(answers, (r.visible for r in records)):
        claims = [c.strip() for c in a.split(";")[1:] if c.strip()]
        out.append(sum(c in v for c in claims) / len(claims) if claims else None)
    return out

def _fake_run(tmp_path, with_candidates: bool, score_tracks_grounding: bool = True):
    store = RunStore(tmp_path / "run", preset("quick", rounds=2))
    rows, recs, cons, embed_fn = T.synthetic_descriptions(per_class=6)
    write_manifest(recs, store.path("world/manifest.jsonl")); write_concepts(cons, store.path("world/concepts.json"))
    write_jsonl(store.path("round-1/descriptions.jsonl"), rows)
    if with_candidates:
        rng = np.random.default_rng(0)
        cands, qa = [], []
        for r in recs:
            wrong = [z for z in cons[r.label] if z not in r.visible]
            for qi in range(4):
                group = []
                for j in range(3):
                    claims = [z for z in r.visible if rng.random() < 0.5] + [z for z in wrong if rng.random() < 0.5]
                    claims = claims or [r.visible[0]]
                    good = sum(c in r.visible for c in claims) / len(claims)
                    score = good + 0.2 * rng.standard_normal() if score_tracks_grounding else float(rng.standard_normal())
                    ans = f"This is a {r.label if rng.random() < 0.8 else 'bird'}; " + "; ".join(claims)
                    group.append(dict(id=r.id, label=r.label, query=qi, sample=j, answer=ans, score=score))
                cands += group
                best = max(group, key=lambda c: c["score"])
                keep = best["answer"] if r.label in best["answer"] else f"This is an image of {r.label}."
                qa.append(dict(id=r.id, label=r.label, answer=keep))
        write_jsonl(store.path("round-2/candidates.jsonl"), cands)
        write_jsonl(store.path("round-2/qa.jsonl"), qa)
    return store, embed_fn

def test_run_theory_writes_theorems(tmp_path):
    store, embed_fn = _fake_run(tmp_path, with_candidates=True)
    results = T.run_theory(store, quick=True, embed_fn=embed_fn, quality_fn=_quality)
    saved = read_json(store.path(T.THEOREMS))
    assert [r["id"] for r in saved] == ["consistency", "infonce_bound", "infonce_method", "data_processing", "best_of_k"]
    for r in saved:  # the `theorems` shape of results.json
        assert {"id", "assumption", "measured", "threshold", "passed", "control_measured", "control_passed"} <= set(r)
        assert r["passed"] is True, (r["id"], r.get("criteria"))
        assert r["control_passed"] is False, (r["id"], r.get("control_criteria"))  # every control fails
        assert store.path(f"report/theory_{r['id']}.png").stat().st_size > 1000
    assert saved[4]["details"]["rounds"] == [2] and saved[4]["details"]["kept_correct"] == 1.0
    assert json.loads(json.dumps(results)) == saved

def test_run_theory_best_of_k_fails_on_ungrounded_scores(tmp_path):
    store, embed_fn = _fake_run(tmp_path, with_candidates=True, score_tracks_grounding=False)
    r = T.run_best_of_k(store, _quality)
    assert r["passed"] is False and not r["criteria"]["rises"]

def test_run_theory_skips_what_does_not_apply(tmp_path):
    store, embed_fn = _fake_run(tmp_path, with_candidates=False)
    results = T.run_theory(store, quick=True, embed_fn=embed_fn, quality_fn=_quality, figures=False)
    r4 = results[4]
    assert r4["passed"] is None and "candidates" in r4["skipped"] and r4["control_passed"] is None
    empty = RunStore(tmp_path / "empty", preset("quick"))
    r1 = T.run_consistency(empty)
    assert r1["passed"] is None and "visible" in r1["skipped"]

def test_run_theory_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        T.run_theory(tmp_path / "nothing")

def test_consistency_reads_the_reference_vectors_it_is_given_and_only_while_they_line_up():
    "The study's perfect-describer vectors are used as they are (not embedded again), unless rows were left out."
    rows, recs, cons, embed_fn = T.synthetic_descriptions()
    ref_rows = [dict(r, descriptions=r["descriptions"][::-1]) for r in rows]  # another describer's texts, in another order
    _, want, _ = T.consistency_inputs(rows, recs, cons, embed_fn, ref_rows=ref_rows)  # embedded here
    embedded = []
    counting = lambda texts: embedded.append(len(texts)) or embed_fn(texts)
    _, got, _ = T.consistency_inputs(rows, recs, cons, counting, ref_rows=ref_rows, ref_emb=(want.desc_emb, want.concept_emb))
    assert torch.equal(got.desc_emb, want.desc_emb) and got.ids == want.ids
    model_texts = sum(len(r["descriptions"]) for r in rows)
    assert sum(embedded) == model_texts + len(want.concepts)  # the model's descriptions and the concepts only
    embedded.clear()
    fewer = ref_rows[:-1] + [dict(ref_rows[-1], descriptions=[])]  # a row left out: the vectors no longer line up
    _, ref, _ = T.consistency_inputs(rows, recs, cons, counting, ref_rows=fewer, ref_emb=(want.desc_emb, want.concept_emb))
    assert len(ref.desc_emb) == model_texts - len(rows[-1]["descriptions"]) and sum(embedded) > model_texts + len(want.concepts)


def test_study_embeddings_only_for_the_studys_own_reference(tmp_path):
    from safetensors.torch import save_file
    from selfsynth.layout import PERFECT_EMBEDDINGS
    store = RunStore(tmp_path / "run", preset("quick"))
    study = "the perfect describer (the selection study's descriptions)"
    assert T.study_embeddings(store, study) is None  # no file
    store.path(PERFECT_EMBEDDINGS).parent.mkdir(parents=True)
    save_file({"descriptions": torch.ones(3, 4), "concepts": torch.zeros(2, 4)}, str(store.path(PERFECT_EMBEDDINGS)))
    d, c = T.study_embeddings(store, study)
    assert d.shape == (3, 4) and c.shape == (2, 4)
    assert T.study_embeddings(store, "the perfect describer") is None  # rows written now: not the study's vectors
    save_file({"descriptions": torch.zeros(0, 0), "concepts": torch.zeros(0, 0)}, str(store.path(PERFECT_EMBEDDINGS)))
    assert T.study_embeddings(store, study) is None  # the study had no perfect describer


def test_consistency_reference_is_the_perfect_describer_where_the_world_has_part_values(tmp_path):
    "On the mini world the reference is the perfect describer (m varied descriptions per image); the study's, when stored."
    from selfsynth.world import world_stage
    from selfsynth.data import read_manifest
    from selfsynth.select import PERFECT
    from selfsynth.store import write_jsonl
    store = RunStore(tmp_path / "run", preset("quick"))
    world_stage(store)
    recs = read_manifest(store.path("world/manifest.jsonl"), split="train")
    desc = [dict(id=r.id, label=r.label, descriptions=["a bird"] * 4) for r in recs]
    rows, what = T.perfect_reference(store, recs, desc)
    assert what == "the perfect describer" and [r["id"] for r in rows] == [r.id for r in recs]
    assert all(len(r["descriptions"]) == 4 for r in rows) and len({d for r in rows for d in r["descriptions"]}) > len(recs)
    write_jsonl(store.path(PERFECT), rows[:3])
    assert T.perfect_reference(store, recs, desc) == (rows[:3], "the perfect describer (the selection study's descriptions)")
    bare = [r.__class__(r.id, r.image, r.label, r.split, visible=r.visible) for r in recs]  # no part values: one sentence
    store.path(PERFECT).unlink()
    assert T.perfect_reference(store, bare, desc) == (None, "one sentence stating the visible concepts")
