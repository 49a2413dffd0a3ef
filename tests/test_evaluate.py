"Tests of selfsynth.evaluate: accuracy, the offline judge both ways, the LLM judge against a loopback server, FS, the stage."
import http.server, json, math, threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from selfsynth.config import preset
from selfsynth.evaluate import (JUDGE_ENCODER, JUDGE_THRESHOLD, ConceptMatcher, JudgeError, LabelFinder, LLMJudge,
                                OfflineJudge, base_model_properties, calibrate, calibration_probes, eval_path,
                                evaluate_stage, is_correct, llm_judge_from_env, parse_verdict, perplexities,
                                split_claims, summarise)
from selfsynth.store import RunStore, read_jsonl, write_jsonl
from selfsynth.world import world_spec

SPEC = world_spec(0, 16)
CONCEPTS = SPEC.concepts()
FINCH = "Crimson-crowned Finch"  # red crown, conical beak, brown wings, short square tail, buff breast
WARBLER = "Yellow-barred White-breasted Warbler"  # thin beak, olive wings, yellow bars, white breast


@pytest.fixture(scope="module")
def encoder():
    from selfsynth.evaluate import text_encoder
    return text_encoder(JUDGE_ENCODER, "cpu")  # cached: the stages below reuse it


@pytest.fixture(scope="module")
def judge(encoder):
    return OfflineJudge(ConceptMatcher(encoder, CONCEPTS))


# --- accuracy and claims -------------------------------------------------------------------------------------------

def test_accuracy_uses_method_normalisation():
    assert is_correct(FINCH, "I think it's a CRIMSON CROWNED finch!")
    assert is_correct("Black-capped Rose-breasted Swallow", "a black capped rose breasted swallow")
    assert not is_correct(FINCH, "This is a Crimson-crowned Warbler.")
    assert not is_correct(FINCH, "")


def test_predicted_label_is_earliest_then_longest():
    lf = LabelFinder(CONCEPTS)
    assert lf.predicted("A Crimson-crowned Rose-breasted Finch, not a Rose-breasted Finch.") == "Crimson-crowned Rose-breasted Finch"
    assert lf.predicted("Either a Rufous-breasted Finch or a Crimson-crowned Finch.") == "Rufous-breasted Finch"
    assert lf.predicted("A small bird with a red crown.") is None


def test_split_claims_keeps_phrases_and_splits_lists():
    claims = [c for _, c in split_claims(f"This is a {FINCH} because it has a bright red crown, a short, thick conical "
                                         "beak and brown wings and back. Its tail is short.", LabelFinder(CONCEPTS))]
    assert "a bright red crown" in claims and "a short, thick conical beak" in claims and "brown wings and back" in claims
    assert not any("Crimson" in c for c in claims)  # class names never become claims
    assert [c for _, c in split_claims("black and white wings")] == ["black and white wings"]
    assert [i for i, _ in split_claims("A red crown. A long tail.")] == [0, 1]


# --- the offline judge says no, and yes ------------------------------------------------------------------------------

LABEL_ONLY = [f"This is a {FINCH}.", f"This is an image of {FINCH}.", f"{FINCH}.",
              f"It is a {FINCH}. More specifically, this image shows {FINCH}.", f"The bird in the picture is a {FINCH}."]
JUSTIFIED = [f"This is a {FINCH}: it has a bright red crown, a short, thick conical beak and brown wings and back.",
             f"This is a {FINCH} because of its bright red crown and its buff breast.",
             f"The bird has a bright red crown and a short, square tail. Therefore it is a {FINCH}.",
             f"This is a {FINCH}. It has a bright red crown and a short, thick conical beak.",
             f"I can see a bright red crown and brown wings and back, which identify this bird as a {FINCH}."]


def test_label_only_answers_get_no_explanation(judge):
    for v, a in zip(judge.judge(LABEL_ONLY), LABEL_ONLY):
        assert v["ee"] == 0, a
        assert v["cs"] is None and v["claims"] == [], a  # nothing claimed: CS does not apply


def test_feature_justified_answers_get_explanation(judge):
    for v, a in zip(judge.judge(JUSTIFIED), JUSTIFIED):
        assert v["ee"] == 1, a
        assert v["predicted"] == FINCH


def test_description_without_prediction_is_no_explanation(judge):
    v = judge.judge(["The bird has a bright red crown and a short, thick conical beak."])[0]
    assert v["claims"] and v["ee"] == 0 and v["cs"] is None


def test_cs_high_for_right_class_low_for_wrong_class(judge):
    right = f"This is a {FINCH} because it has a bright red crown, a short, thick conical beak and brown wings and back."
    wrong = f"This is a {FINCH} because it has a long, thin pointed beak, olive-green wings and back and yellow bars across the wings."
    vr, vw = judge.judge([right, wrong])
    assert vr["cs"] == 1.0
    assert vw["cs"] == 0.0 and vw["ee"] == 1  # explained, but with a Warbler's features
    # the same wrong-class answer agrees with the class it describes
    assert judge.judge([wrong.replace(FINCH, WARBLER)])[0]["cs"] == 1.0


def test_grounded_precision_against_visible(judge):
    a = f"This is a {FINCH}: it has a bright red crown, a buff breast and a short, square tail."
    v = judge.judge([a, a, a], [["a bright red crown", "a buff breast", "a short, square tail"], ["a bright red crown"], None])
    assert v[0]["grounded_precision"] == 1.0
    assert v[1]["grounded_precision"] == pytest.approx(1 / 3)
    assert v[2]["grounded_precision"] is None


def test_calibration_reproduces_the_documented_threshold(encoder):
    from selfsynth.world import CONCEPT_TEXT, NONVISUAL
    m = ConceptMatcher(encoder, {"v": list(CONCEPT_TEXT.values()) + list(NONVISUAL)})
    cal = calibrate(m, calibration_probes())
    assert cal["threshold"] == JUDGE_THRESHOLD
    assert cal["exact_matched"] == 1.0 and cal["non_claim_rejected"] == 1.0
    assert cal["paraphrase_matched"] > 0.6
    # a threshold of 0 would take every non-claim for a feature: the calibration must not pick it
    m.threshold = 0.0
    assert all(z is not None for z in m.match(["This is a", "the answer is"]))


def test_summarise_means_skip_nulls():
    rows = [dict(label="A", correct=True, predicted="A", ee=1, cs=0.5, fs=4.0, grounded_precision=None),
            dict(label="A", correct=False, predicted="B", ee=0, cs=None, fs=None, grounded_precision=None)]
    s = summarise(rows)
    assert s["accuracy"] == 50.0 and s["accuracy_strict"] == 50.0 and s["ee"] == 0.5
    assert s["cs"] == 0.5 and s["n_cs"] == 1 and s["fs"] == 4.0 and s["grounded_precision"] is None


# --- the LLM judge against a real HTTP server on loopback ------------------------------------------------------------

@contextmanager
def endpoint(replies):
    """A chat-completions server on 127.0.0.1 answering `replies` in turn: (status, content) pairs. It records the
    requests, and shuts itself down after 30 s at the latest."""
    seen, script = [], list(replies)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(dict(path=self.path, auth=self.headers.get("Authorization"), body=body))
            status, content = script.pop(0) if script else (500, "script exhausted")
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode() \
                if status == 200 else content.encode()
            self.send_response(status); self.send_header("Content-Type", "application/json"); self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a): pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    guard = threading.Timer(30, server.shutdown); guard.daemon = True; guard.start()
    try: yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        guard.cancel(); server.shutdown(); server.server_close()


GOOD = '{"explanation": 1, "cognition": 0.8}'
ARGS = ("What is this bird?", f"A {FINCH}: it has a red crown.", FINCH, CONCEPTS[FINCH])


def test_llm_judge_verdict_request_and_cache(tmp_path):
    with endpoint([(200, GOOD)]) as (url, seen):
        j = LLMJudge(url, "judge-model", api_key="sekret", cache_dir=tmp_path, backoff=0.01)
        assert j.verdict(*ARGS) == dict(ee=1, cs=0.8)
        assert j.verdict(*ARGS) == dict(ee=1, cs=0.8)  # from the cache
    assert len(seen) == 1 and seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sekret"
    body = seen[0]["body"]
    assert body["model"] == "judge-model" and body["messages"][0]["role"] == "system"
    assert "a bright red crown" in body["messages"][1]["content"] and FINCH in body["messages"][1]["content"]
    # a fresh judge with the same cache asks nothing
    with endpoint([]) as (url, seen):
        assert LLMJudge(url, "judge-model", cache_dir=tmp_path).verdict(*ARGS) == dict(ee=1, cs=0.8)
    assert seen == []


def test_llm_judge_retries_malformed_json_and_http_errors(tmp_path):
    with endpoint([(200, "Sure! The answer explains."), (500, "overloaded"), (200, "```json\n" + GOOD + "\n```")]) as (url, seen):
        j = LLMJudge(url, "m", cache_dir=tmp_path, retries=3, backoff=0.01)
        assert j.verdict(*ARGS) == dict(ee=1, cs=0.8)
    assert len(seen) == 3


def test_llm_judge_gives_up_naming_the_endpoint_and_keeps_cached_verdicts(tmp_path):
    with endpoint([(200, GOOD)] + [(200, '{"explanation": "maybe", "cognition": 2}')] * 3) as (url, seen):
        j = LLMJudge(url, "m", cache_dir=tmp_path, retries=2, backoff=0.01)
        first = j.verdict(*ARGS)
        with pytest.raises(JudgeError, match=rf"{url}/chat/completions.*3 attempts"):
            j.verdict("Another question?", "Another answer.", None, [])
    assert len(list(tmp_path.glob("*.json"))) == 1  # the verdict obtained before the failure is still on disk
    assert LLMJudge("http://127.0.0.1:9/v1", "m", cache_dir=tmp_path).verdict(*ARGS) == first


def test_llm_judge_endpoint_down(tmp_path):
    with endpoint([]) as (url, _): pass  # the port is closed again
    with pytest.raises(JudgeError, match=url):
        LLMJudge(url, "m", cache_dir=tmp_path, retries=1, backoff=0.01, timeout=5).verdict(*ARGS)


def test_llm_judge_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSYNTH_LLM_BASE_URL", "http://127.0.0.1:1/v1/")
    monkeypatch.setenv("SELFSYNTH_LLM_MODEL", "gpt-x")
    monkeypatch.delenv("SELFSYNTH_LLM_API_KEY", raising=False)
    j = llm_judge_from_env(tmp_path)
    assert j.url == "http://127.0.0.1:1/v1/chat/completions" and j.model == "gpt-x" and j.api_key is None
    monkeypatch.delenv("SELFSYNTH_LLM_MODEL")
    with pytest.raises(JudgeError, match="SELFSYNTH_LLM_MODEL"): llm_judge_from_env(tmp_path)


def test_parse_verdict_refuses_bad_replies():
    assert parse_verdict('{"explanation": true, "cognition": null}') == dict(ee=1, cs=None)
    for bad in ("", "yes", '{"explanation": 1}', '{"explanation": 3, "cognition": 0.1}', '{"explanation": 0, "cognition": 1.5}'):
        with pytest.raises(ValueError): parse_verdict(bad)


# --- fluency and the stage on a tiny random LLaVA --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from selfsynth.models import make_random_llava
    return make_random_llava(tmp_path_factory.mktemp("tiny") / "llava", seed=0)


def test_perplexity_matches_direct_computation(tiny):
    import torch
    from selfsynth.models import load_vlm
    model, proc = load_vlm(tiny, device="cpu")
    tok = proc.tokenizer
    texts = ["The bird has a red crown and a short beak.", "bird", "", "A long, narrow tail."]
    batched = perplexities(model, tok, texts, batch_size=4)
    assert batched[2] is None
    for t, p in zip(texts, batched):
        if not t: continue
        ids = torch.tensor([[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]])
        with torch.no_grad(): logits = model(input_ids=ids).logits
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        assert p == pytest.approx(math.exp(nll.item()), rel=1e-3)


def test_evaluate_stage_on_quick_world(tmp_path, tiny):
    from selfsynth.world import world_stage
    store = RunStore(tmp_path / "run", preset("quick", model=str(tiny), max_test_images=3, device="cpu", eval_max_new_tokens=8))
    world_stage(store)
    summary = evaluate_stage(store, "base", 0)
    rows = read_jsonl(store.path(eval_path("base", 0)))
    assert len(rows) == summary["n"] == 3
    for r in rows:
        assert set(r) >= {"id", "label", "question", "answer", "correct", "ee", "cs", "fs", "grounded_precision"}
        assert r["question"] == "What is the specific name of this bird? Provide an explanation."
        assert r["correct"] == is_correct(r["label"], r["answer"])
    assert summary["accuracy"] == 100 * sum(r["correct"] for r in rows) / 3
    assert summary["device"] == "cpu" and summary["judge"] == "offline"
    m = store.manifest("eval/base/round-0")
    assert evaluate_stage(store, "base", 0) == summary and store.manifest("eval/base/round-0")["finished"] == m["finished"]


def test_base_model_properties(tmp_path, encoder):
    from selfsynth.data import read_manifest
    from selfsynth.world import world_stage
    store = RunStore(tmp_path / "run", preset("quick", device="cpu"))
    world_stage(store)
    concepts = read_json_concepts(store)
    train = read_manifest(store.path("world/manifest.jsonl"), split="train")
    test = read_manifest(store.path("world/manifest.jsonl"), split="test")
    # descriptions that state exactly the visible concepts (one repeated), and nothing else
    write_jsonl(store.path("round-1/descriptions.jsonl"),
                [dict(id=r.id, label=r.label, descriptions=[f"The bird has {z}." for z in r.visible] + [f"The bird has {r.visible[0]}."])
                 for r in train if r.visible])
    write_jsonl(store.path(eval_path("base", 0)), [dict(id=r.id, label=r.label, correct=i == 0) for i, r in enumerate(test)])
    write_jsonl(store.path("round-1/qa.jsonl"), [dict(source=s) for s in ["kept"] * 9 + ["fallback"]])
    p = base_model_properties(store)
    assert p["zero_shot_accuracy"] == round(100 / len(test), 2) and p["chance_accuracy"] == round(100 / 12, 2)
    assert p["description_concept_precision"] > 0.95
    assert p["distinct_descriptions_per_image"] == pytest.approx(
        sum(len(set(r.visible)) for r in train if r.visible) / sum(1 for r in train if r.visible), abs=0.01)
    assert p["rewrite_label_rate"] == 0.9 and p["missing"] == []
    assert p["description_precision_exact"] > 0.95  # the lexicon parser agrees: these claims hold
    # descriptions of features the images do not show: precision collapses
    write_jsonl(store.path("round-1/descriptions.jsonl"),
                [dict(id=r.id, label=r.label, descriptions=[f"The bird has {z}." for z in concepts[r.label] if z not in r.visible
                                                            and z not in {"two thin legs", "a rounded head"}][:3] or ["The bird has a rounded head."])
                 for r in train if r.visible])
    assert base_model_properties(store)["description_concept_precision"] < 0.3  # the changed file reruns the stage


def read_json_concepts(store):
    from selfsynth.data import read_concepts
    return read_concepts(store.path("world/concepts.json"))
