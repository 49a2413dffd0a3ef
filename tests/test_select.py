"Concept selection: InfoNCE scores against a brute force, the rule, baselines, the direct selector's endpoint."
import base64, io, json, math, random, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import pytest, torch
from PIL import Image
from selfsynth.select import (embed_inputs, infonce_scores, apply_rule, select_ib, select_cosine, select_class_all,
                              select_random, select_direct, selection_vs_n, leave_one_out_logsumexp, parse_yes_no,
                              endpoint_asker, asker_from_env, direct_question, SelectionInputs)


def brute_force_scores(rows, concepts, vec, tau):
    "METHOD.md's s(z), image by image, with plain float64 exp/log and the negatives summed over other images directly."
    out = []
    for x, r in enumerate(rows):
        negs = [d for y, o in enumerate(rows) if y != x for d in o["descriptions"]]
        scores = []
        for z in dict.fromkeys(concepts[r["label"]]):
            dot = lambda a, b: sum(p * q for p, q in zip(vec[a], vec[b]))
            neg = sum(math.exp(dot(z, d) / tau) for d in negs)
            s = 0.0
            for d in r["descriptions"]:
                pos = math.exp(dot(d, z) / tau)
                s += math.log(pos / (pos + neg))
            scores.append(s)
        out.append(scores)
    return out


def random_world(seed, dim=6, n_images=7, spread=1.0):
    "Random unit vectors for descriptions and concepts; classes share a concept; images have 1-4 descriptions."
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(dim, generator=g)
    unit = lambda: (lambda v: v / v.norm())(base * (1 - spread) + spread * torch.randn(dim, generator=g))
    vec, rows = {}, []
    concepts = {"A": ["a1", "a2", "a3", "shared"], "B": ["b1", "b2", "shared", "b3", "b4"]}
    for z in ["a1", "a2", "a3", "shared", "b1", "b2", "b3", "b4"]: vec[z] = unit()
    for i in range(n_images):
        descs = [f"d{i}_{j}" for j in range(1 + (i * 7 + seed) % 4)]
        for d in descs: vec[d] = unit()
        rows.append(dict(id=f"i{i}", label="AB"[i % 2], descriptions=descs))
    as_list = {k: [float(x) for x in v.double()] for k, v in vec.items()}
    return rows, concepts, vec, as_list


def inputs(rows, concepts, vec):
    return embed_inputs(rows, concepts, embed_fn=lambda texts: torch.stack([vec[t] for t in texts]) if texts else torch.zeros(0, 6))


@pytest.mark.parametrize("tau", [0.1, 0.01])
@pytest.mark.parametrize("chunk", [1, 3, 8192])
def test_scores_match_brute_force(tau, chunk):
    rows, concepts, vec, as_list = random_world(seed=1)
    got = infonce_scores(inputs(rows, concepts, vec), tau=tau, chunk=chunk)
    want = brute_force_scores(rows, concepts, as_list, tau)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w): assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_tau_001_near_identical_vectors_no_overflow():
    "All vectors close to one direction: logits near 100, exp overflows float32; scores stay finite and exact."
    rows, concepts, vec, as_list = random_world(seed=2, spread=0.05)
    sims = torch.stack([vec[d] for r in rows for d in r["descriptions"]]) @ vec["a1"]
    assert sims.min() > 0.98 and torch.isinf(torch.exp(sims.float() / 0.01)).all()  # the naive float32 path overflows
    got = infonce_scores(inputs(rows, concepts, vec), tau=0.01)
    want = brute_force_scores(rows, concepts, as_list, 0.01)
    assert all(math.isfinite(s) for g in got for s in g)
    for g, w in zip(got, want):
        for a, b in zip(g, w): assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_own_descriptions_dominating_negatives():
    "tau=0.01, an own description equal to the concept: total-minus-own in exp space would cancel to -inf."
    e = torch.eye(4)
    vec = {"z": e[0], "own": e[0], "other_own": e[1], "n1": e[2], "n2": e[2], "n3": e[3]}
    rows = [dict(id="x", label="C", descriptions=["own", "other_own"]), dict(id="y", label="C", descriptions=["n1", "n2", "n3"])]
    got = infonce_scores(inputs(rows, {"C": ["z"]}, vec), tau=0.01)
    # x: own term log(e^100 / (e^100 + 3)) ~ 0; other_own term log(1 / (1 + 3)) = -log 4
    assert got[0][0] == pytest.approx(-math.log(4), abs=1e-9)
    assert got[1][0] == pytest.approx(brute_force_scores(rows, {"C": ["z"]}, {k: v.tolist() for k, v in vec.items()}, 0.01)[1][0])


def test_leave_one_out_logsumexp_exact():
    a = torch.randn(9, 4, dtype=torch.float64) * 30
    want = torch.stack([torch.cat([a[:i], a[i + 1:]]).logsumexp(0) for i in range(9)])
    assert torch.allclose(leave_one_out_logsumexp(a), want, atol=1e-9)


def reference_rule(concepts, scores, std=0.4, min_k=3):
    t = torch.tensor(scores, dtype=torch.float64)
    thr = t.mean() + std * t.std()  # torch.std: sample std, as in the public code
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    keep = [j for j in order if scores[j] > thr]
    if len(keep) < min_k: keep = order[:min_k]
    return [concepts[j] for j in keep]


def test_rule_threshold_minimum_and_order():
    z = list("abcdef")
    # mean 5.75, sample sd 4.379 -> threshold 7.50: b, c, d pass (e = 7 does not), ordered by score
    assert apply_rule(z, [0.0, 10.0, 9.0, 8.0, 7.0, 0.5]) == ["b", "c", "d"]
    # e = 7.5: above mean + 0.4 * population sd (7.44) but not the sample sd's 7.60: the sample sd decides
    assert apply_rule(z, [0.0, 10.0, 9.0, 8.0, 7.5, 0.5]) == ["b", "c", "d"]
    assert apply_rule(z, [0.0, 10.0, 9.0, 8.0, 7.8, 0.5]) == ["b", "c", "d", "e"]  # threshold 7.66
    # one outlier passes; topped up to 3 with the best
    assert apply_rule(z, [1.0, 50.0, 2.0, 3.0, 1.5, 0.0]) == ["b", "d", "c"]
    assert apply_rule(z, [1.0, 50.0, 2.0, 3.0, 1.5, 0.0], min_k=1) == ["b"]
    assert apply_rule(["a", "b"], [1.0, 2.0]) == ["b", "a"]  # fewer concepts than the minimum: all, ordered
    assert apply_rule(["a", "b", "c", "d"], [1.0, 1.0, 1.0, 1.0]) == ["a", "b", "c"]  # all equal: none passes, ties in order
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(3, 12)
        s = [rng.gauss(0, 5) for _ in range(n)]
        assert apply_rule([str(i) for i in range(n)], s) == reference_rule([str(i) for i in range(n)], s)


def test_select_ib_rows_and_generic_concept():
    "A concept every description matches is uninformative: each image's own feature ranks first, generic below."
    u = lambda *v: (lambda t: t / t.norm())(torch.tensor(v, dtype=torch.float32))
    vec = {"f0": u(1, 0, 0, 1), "f1": u(0, 1, 0, 1), "f2": u(0, 0, 1, 1), "generic": u(0, 0, 0, 1)}
    rows = [dict(id=f"a{i}", label="A", descriptions=[f"f{i}", "generic"]) for i in range(3)]
    concepts = {"A": ["generic", "f0", "f1", "f2"]}
    for tau in (0.1, 0.01):
        out = select_ib(inputs(rows, concepts, vec), tau=tau)
        assert [r["selected"][0] for r in out] == ["f0", "f1", "f2"]
        for r in out:
            assert set(r["scores"]) == set(concepts["A"]) and len(r["selected"]) == 3
            s = [r["scores"][z] for z in r["selected"]]
            assert s == sorted(s, reverse=True)
            assert r["scores"]["generic"] < r["scores"][r["selected"][0]]


def test_first_n_equals_truncated_data():
    rows, concepts, vec, _ = random_world(seed=3)
    inp = inputs(rows, concepts, vec)
    for n in (1, 2):
        trunc = [dict(r, descriptions=r["descriptions"][:n]) for r in rows]
        assert select_ib(inp, tau=0.1, first_n=n) == select_ib(inputs(trunc, concepts, vec), tau=0.1)
    by_n = selection_vs_n(inp, ns=(1, 2, 30))
    assert set(by_n) == {1, 2} and by_n[2] == select_ib(inp, first_n=2)


def test_baselines():
    rows, concepts, vec, _ = random_world(seed=4)
    inp = inputs(rows, concepts, vec)
    top2 = select_cosine(inp, k=2)
    for r in top2:
        s = r["scores"]
        assert len(r["selected"]) == 2 and min(s[z] for z in r["selected"]) >= max(v for z, v in s.items() if z not in r["selected"])
    assert select_cosine(inp, k={r["id"]: 2 for r in rows}) == top2
    assert [len(r["selected"]) for r in select_cosine(inp, k={r["id"]: 1 + i % 3 for i, r in enumerate(rows)})] == [1 + i % 3 for i in range(len(rows))]
    assert [r["selected"] for r in select_class_all(rows, concepts)] == [concepts[r["label"]] for r in rows]
    a = select_random(rows, concepts, {r["id"]: 2 for r in rows}, seed=0)
    assert a == select_random(rows, concepts, 2, seed=0) and a != select_random(rows, concepts, 2, seed=1)
    assert all(len(r["selected"]) == 2 and set(r["selected"]) <= set(concepts[r["label"]]) for r in a)


def test_missing_label_is_an_error():
    rows, concepts, vec, _ = random_world(seed=5)
    with pytest.raises(ValueError, match="no concepts for label 'B'"):
        inputs(rows, {"A": concepts["A"]}, vec)


def test_parse_yes_no():
    assert [parse_yes_no(t) for t in ["Yes.", "no, it has not", "I think yes", "maybe", "", "yes or no"]] == \
           [True, False, True, None, None, True]


def test_direct_selection_through_a_loopback_endpoint(tmp_path, monkeypatch):
    seen = []
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = next(c["text"] for c in body["messages"][0]["content"] if c["type"] == "text")
            url = next(c["image_url"]["url"] for c in body["messages"][0]["content"] if c["type"] == "image_url")
            im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            seen.append((self.path, self.headers.get("Authorization"), body["model"], im.size))
            if "broken" in text:
                self.send_response(500); self.end_headers(); self.wfile.write(b"boom"); return
            red = im.getpixel((0, 0))[0] > 128
            answer = "Yes." if ("red" in text) == red else "No, it does not."
            data = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers(); self.wfile.write(data)
    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        Image.new("RGB", (8, 8), (250, 0, 0)).save(tmp_path / "red.png")
        Image.new("RGB", (8, 8), (0, 0, 250)).save(tmp_path / "blue.png")
        base = f"http://127.0.0.1:{server.server_port}/v1"
        monkeypatch.setenv("SELFSYNTH_LLM_BASE_URL", base); monkeypatch.setenv("SELFSYNTH_LLM_MODEL", "judge-1")
        monkeypatch.setenv("SELFSYNTH_LLM_API_KEY", "k123")
        ask = asker_from_env()
        rows = [dict(id="r", label="C"), dict(id="b", label="C")]
        concepts = {"C": ["red crown", "blue wings", "long tail"]}
        out, counts = select_direct(rows, {"r": tmp_path / "red.png", "b": tmp_path / "blue.png"}, concepts, ask, "mini")
        assert out[0]["selected"] == ["red crown"] and out[1]["selected"] == ["blue wings", "long tail"]
        assert counts == dict(questions=6, yes=3, no=3, unparsed=0)
        assert seen[0] == ("/v1/chat/completions", "Bearer k123", "judge-1", (8, 8))
        assert direct_question("stanford-dogs", "floppy ears") == "Does this dog have floppy ears? Answer yes or no."
        with pytest.raises(RuntimeError, match=r"chat/completions failed for image .*red.png, question 'broken\?' .*HTTP 500"):
            endpoint_asker(base, "judge-1", retries=0)([tmp_path / "red.png"], ["broken?"])
        monkeypatch.delenv("SELFSYNTH_LLM_BASE_URL")
        assert asker_from_env() is None
    finally:
        server.shutdown()


def make_store(tmp_path, rows, concepts, **over):
    from selfsynth.config import preset
    from selfsynth.store import RunStore, write_jsonl
    from selfsynth.data import write_concepts
    store = RunStore(tmp_path / "run", preset("quick", device="cpu", **over))
    write_jsonl(store.path("round-1/descriptions.jsonl"), rows)
    write_concepts(concepts, store.path("world/concepts.json"))
    return store


DESCS = {"Scarlet Tit": ["the top of its head is bright red", "a red patch on the crown", "red feathers on its head, two legs"],
         "Azure Warbler": ["its wings are a vivid blue", "blue wing feathers", "bright blue wings and two legs"],
         "Snow Bunting": ["white feathers all over its body", "a pure white bird standing on two legs", "snowy white plumage"],
         "Jade Parrot": ["a long green tail", "green tail feathers, two legs", "its tail is green and long"]}
CONCEPTS = {"Scarlet Tit": ["has two legs", "a red crown", "a yellow belly", "sings at dawn"],
            "Azure Warbler": ["blue wings", "has two legs", "a long tail", "nests in reeds"],
            "Snow Bunting": ["white plumage", "has two legs", "a short beak"],
            "Jade Parrot": ["a green tail", "has two legs", "a hooked beak"]}
FIRST = ["a red crown", "blue wings", "white plumage", "a green tail"]


def test_select_stage_with_the_packaged_encoder(tmp_path, monkeypatch):
    from selfsynth.store import read_jsonl
    from selfsynth.select import select_stage, selection_study_stage, SELECTED, STUDY
    import selfsynth.select as S
    rows = [dict(id=f"i{k}", label=label, descriptions=d) for k, (label, d) in enumerate(DESCS.items())]
    store = make_store(tmp_path, rows, CONCEPTS)
    m = select_stage(store)
    out = read_jsonl(store.path(SELECTED))
    assert [r["id"] for r in out] == [r["id"] for r in rows] and m["counts"]["images"] == 4
    assert [r["selected"][0] for r in out] == FIRST
    for r in out:
        s = [r["scores"][z] for z in r["selected"]]
        assert s == sorted(s, reverse=True) and len(r["selected"]) >= 3 and set(r["scores"]) == set(CONCEPTS[r["label"]])
    assert select_stage(store)["finished"] == m["finished"]  # up to date
    assert select_stage(type(store)(store.root, store.cfg.replace(tau=0.01)))["key"] != m["key"]  # tau is part of the key

    monkeypatch.setattr(S, "asker_from_env", lambda *a, **kw: lambda images, qs: ["yes" if any(z in q for z in FIRST) else "no" for q in qs])
    from selfsynth.data import Record, write_manifest
    for r in rows: Image.new("RGB", (8, 8)).save(store.path(f"world/{r['id']}.png"))
    write_manifest([Record(r["id"], f"{r['id']}.png", r["label"], "train") for r in rows], store.path("world/manifest.jsonl"))
    c = selection_study_stage(store, ns=(1, 2))["counts"]
    study = read_jsonl(store.path(STUDY))
    methods = {(r["method"], r["n"]) for r in study}
    assert methods == {(m, n) for m in ("infonce", "infonce_image", "infonce_other_class", "cosine", "random") for n in (1, 2, 3)} | \
                      {("class_all", 3), ("vlm_direct", None)}
    assert {r["tau"] for r in study if r["method"] == "infonce"} == set(S.STUDY_TAUS) and {r["describer"] for r in study} == {"model", None}
    assert c["direct_questions"] == 14 and c["direct_yes"] == 4 and c["describers"] == ["model"] and "perfect_skipped" in c
    assert [r["selected"] for r in study if r["method"] == "infonce" and r["n"] == 3 and r["tau"] == store.cfg.tau] == [r["selected"] for r in out]
    direct = [r for r in study if r["method"] == "vlm_direct"]
    assert [r["selected"] for r in direct] == [[z] for z in FIRST]


def test_select_stage_missing_label(tmp_path):
    from selfsynth.select import select_stage
    store = make_store(tmp_path, [dict(id="x1", label="Grey Owl", descriptions=["a grey owl"])], CONCEPTS)
    with pytest.raises(ValueError, match=r"concepts.json: no concepts for label 'Grey Owl' \(images x1\)"):
        select_stage(store)


def test_embeddings_are_made_once_and_shared(tmp_path, monkeypatch):
    "The retriever's embeddings are a stage of their own: what the selection used is what later readers get, unrecomputed."
    import selfsynth.models as M
    from selfsynth.select import embedding_files, embedding_stage, embed_inputs, load_selection_inputs, select_stage
    rows = [dict(id=f"i{k}", label=label, descriptions=d) for k, (label, d) in enumerate(DESCS.items())]
    store = make_store(tmp_path, rows, CONCEPTS)
    select_stage(store)
    name, rel = embedding_files(store.cfg)
    assert (name, rel) == ("embed", "round-1/embeddings/retriever.safetensors") and store.manifest("embed")["counts"]["descriptions"] == 12
    fresh = embed_inputs(rows, CONCEPTS, M.load_text_encoder(store.cfg.retriever, device="cpu"))
    loads = []
    monkeypatch.setattr(M, "load_text_encoder", lambda *a, **k: loads.append(a) or pytest.fail("encoder loaded again"))
    inp = load_selection_inputs(store)[0]
    assert torch.allclose(inp.desc_emb, fresh.desc_emb, atol=1e-6) and torch.allclose(inp.concept_emb, fresh.concept_emb, atol=1e-6)
    assert inp.ids == fresh.ids and inp.concepts == fresh.concepts and torch.equal(inp.owner, fresh.owner)
    assert embedding_files(store.cfg, "other/encoder") == ("embed/other_encoder", "round-1/embeddings/other_encoder.safetensors")

    assert not loads
    with pytest.raises(ValueError, match=r"5 description and \d+ concept embeddings given for 12 descriptions"):
        embed_inputs(rows, CONCEPTS, embeddings=(fresh.desc_emb[:5], fresh.concept_emb))  # embeddings that do not match
    from safetensors.torch import save_file  # a file changed since the stage wrote it is damaged: embedded again, not read
    save_file({"descriptions": fresh.desc_emb[:5].contiguous(), "concepts": fresh.concept_emb}, str(store.path(rel)))
    monkeypatch.undo()
    again = load_selection_inputs(store)[0]
    assert torch.allclose(again.desc_emb, fresh.desc_emb, atol=1e-6) and len(again.desc_emb) == 12
