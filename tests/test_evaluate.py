"Tests of selfsynth.evaluate: accuracy, the judges (exact and encoder), the LLM judge against a loopback server, FS, the stage."
import http.server, json, math, threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from selfsynth.config import preset, ConfigError
from selfsynth.evaluate import (JUDGE_ENCODER, JUDGE_THRESHOLD, ConceptMatcher, JudgeError, LLMJudge, EncoderJudge, LexiconJudge,
                                answer_nll, base_model_properties, calibrate, calibration_probes, eval_path, evaluate_stage,
                                is_correct, llm_judge_from_env, load_fs_model, make_judge, parse_verdict, pooled_perplexity,
                                split_claims, summarise)
from selfsynth.synthesize import label_finder
from selfsynth.store import RunStore, read_jsonl, write_jsonl
from selfsynth.world import world_spec

SPEC = world_spec(0, 16)
CONCEPTS = SPEC.concepts()
LF = label_finder(CONCEPTS)
FINCH = "Crimson-crowned Finch"  # red crown, conical beak, brown wings, short square tail, buff breast
WARBLER = "Yellow-barred White-breasted Warbler"  # thin beak, olive wings, yellow bars, white breast
FINCH_VALUES = next(c.values for c in SPEC.classes if c.name == FINCH)


@pytest.fixture(scope="module")
def encoder():
    from selfsynth.evaluate import text_encoder
    return text_encoder(JUDGE_ENCODER, "cpu")  # cached: the stages below reuse it


@pytest.fixture(scope="module")
def judge(encoder):
    return EncoderJudge(ConceptMatcher(encoder, CONCEPTS))


# --- accuracy and claims -------------------------------------------------------------------------------------------

def test_accuracy_is_the_class_named():
    assert is_correct(FINCH, "I think it's a CRIMSON CROWNED finch!", LF)
    assert not is_correct(FINCH, "This is a Crimson-crowned Warbler.", LF)
    assert not is_correct(FINCH, "", LF)
    nested = "Spectacled Rufous-breasted Finch"
    assert nested in CONCEPTS and "Rufous-breasted Finch" in CONCEPTS  # the mini world has nested names
    assert not is_correct("Rufous-breasted Finch", f"This is a {nested}.", LF)  # the substring rule would say yes
    assert is_correct(nested, f"This is a {nested}.", LF)
    assert not is_correct(FINCH, f"It is not a {FINCH}.", LF)
    assert is_correct(FINCH, f"Not a {WARBLER}: a {FINCH}.", LF)


def test_predicted_label_is_earliest_then_longest():
    assert LF.predicted("A Spectacled Rufous-breasted Finch, not a Rufous-breasted Finch.") == "Spectacled Rufous-breasted Finch"
    assert LF.predicted("Either a Rufous-breasted Finch or a Crimson-crowned Finch.") == "Rufous-breasted Finch"
    assert LF.predicted("A small bird with a red crown.") is None


def test_split_claims_keeps_phrases_and_splits_lists():
    claims = [c for _, c in split_claims(f"This is a {FINCH} because it has a bright red crown, a short, thick conical "
                                         "beak and brown wings and back. Its tail is short.", LF)]
    assert "a bright red crown" in claims and "a short, thick conical beak" in claims and "brown wings and back" in claims
    assert not any("Crimson" in c for c in claims)  # class names never become claims
    assert [c for _, c in split_claims("black and white wings")] == ["black and white wings"]
    assert [i for i, _ in split_claims("A red crown. A long tail.")] == [0, 1]


# --- the judges say no, and yes --------------------------------------------------------------------------------------

LABEL_ONLY = [f"This is a {FINCH}.", f"This is an image of {FINCH}.", f"{FINCH}.",
              f"It is a {FINCH}. More specifically, this image shows {FINCH}.", f"The bird in the picture is a {FINCH}."]
JUSTIFIED = [f"This is a {FINCH}: it has a bright red crown, a short, thick conical beak and brown wings and back.",
             f"This is a {FINCH} because of its bright red crown and its buff breast.",
             f"The bird has a bright red crown and a short, square tail. Therefore it is a {FINCH}.",
             f"This is a {FINCH}. It has a bright red crown and a short, thick conical beak.",
             f"I can see a bright red crown and brown wings and back, which identify this bird as a {FINCH}."]
RIGHT = f"This is a {FINCH} because it has a bright red crown, a short, thick conical beak and brown wings and back."
WRONG_FEATURES = f"This is a {FINCH} because it has a long, thin pointed beak, olive-green wings and back and yellow bars across the wings."
WRONG_CLASS = WRONG_FEATURES.replace(FINCH, WARBLER)  # names the Warbler and recites the Warbler's list


@pytest.fixture(scope="module", params=["lexicon", "encoder"])
def any_judge(request):
    return LexiconJudge(CONCEPTS) if request.param == "lexicon" else request.getfixturevalue("judge")


def test_label_only_answers_get_no_explanation(any_judge):
    for v, a in zip(any_judge.judge(LABEL_ONLY, [FINCH] * len(LABEL_ONLY)), LABEL_ONLY):
        assert v["ee"] == 0 and v["cs"] is None and v["claims"] == [], a  # nothing claimed: CS does not apply


def test_feature_justified_answers_get_explanation(any_judge):
    for v, a in zip(any_judge.judge(JUSTIFIED, [FINCH] * len(JUSTIFIED)), JUSTIFIED):
        assert v["ee"] == 1 and v["predicted"] == FINCH and v["cs"] == 1.0, a


def test_description_without_a_class_is_no_explanation(any_judge):
    v = any_judge.judge(["The bird has a bright red crown and a short, thick conical beak."], [FINCH])[0]
    assert v["claims"] and v["ee"] == 0 and v["cs"] == 1.0  # CS still says the claims are the true class's


def test_cs_is_judged_against_the_true_class(any_judge):
    vr, vw, vc = any_judge.judge([RIGHT, WRONG_FEATURES, WRONG_CLASS], [FINCH] * 3)
    assert vr["cs"] == 1.0
    assert vw["cs"] == 0.0 and vw["ee"] == 1  # explained, but with a Warbler's features
    assert vc["cs"] == 0.0 and vc["predicted"] == WARBLER  # naming the wrong class and reciting its list earns nothing
    assert any_judge.judge([WRONG_CLASS], [WARBLER])[0]["cs"] == 1.0  # ...unless it is the true class


def test_repeated_claims_count_once_and_are_flagged(any_judge):
    a = f"This is a {FINCH}: a bright red crown, a bright red crown, a bright red crown and a long, thin pointed beak."
    v, w = any_judge.judge([a, RIGHT], [FINCH, FINCH])
    assert v["cs"] == 0.5 and v["repeated"] == 1 and w["repeated"] == 0


def test_encoder_grounded_precision_against_visible(judge):
    a = f"This is a {FINCH}: it has a bright red crown, a buff breast and a short, square tail."
    v = judge.judge([a, a, a], [FINCH] * 3, [["a bright red crown", "a buff breast", "a short, square tail"], ["a bright red crown"], None])
    assert v[0]["grounded_precision"] == 1.0
    assert v[1]["grounded_precision"] == pytest.approx(1 / 3)
    assert v[2]["grounded_precision"] is None


def test_lexicon_judge_parses_exactly_against_attributes():
    j = LexiconJudge(CONCEPTS)
    seen = dict(FINCH_VALUES, breast=None)  # the breast hidden (a bird seen from behind)
    a = f"This is a {FINCH}: a red cap, a stubby cone-shaped bill, a buff breast, and it is perched on a branch."
    v = j.judge([a], [FINCH], [seen])[0]
    assert [z for _, z in v["claims"]] == ["a bright red crown", "a short, thick conical beak", "a buff breast", None]
    assert v["grounded_precision"] == 0.5  # crown and beak hold; the hidden breast and the unmapped clause do not
    assert v["cs"] == 1.0 and v["ee"] == 1
    assert j.holds("dull red crown", dict(crown="dull red")) and not j.holds("nests in tall reeds", seen)


def test_make_judge_keeps_the_judge_away_from_the_training_signal(monkeypatch):
    import selfsynth.evaluate as ev
    monkeypatch.setattr(ev, "text_encoder", lambda *a, **k: pytest.fail("the mini judge must not load a text encoder"))
    assert isinstance(make_judge(preset("quick"), CONCEPTS), LexiconJudge)
    with pytest.raises(ConfigError, match="retriever.*must not be the training signal"):
        make_judge(preset("cub-200", retriever=JUDGE_ENCODER), CONCEPTS)


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


def test_summarise_means_skip_nulls_and_fs_is_pooled():
    rows = [dict(label="A", correct=True, correct_substring=True, ee=1, cs=0.5, fs_nll=4.0, fs_tokens=4, grounded_precision=None, repeated=0),
            dict(label="A", correct=False, correct_substring=True, ee=0, cs=None, fs_nll=8.0, fs_tokens=2, grounded_precision=None, repeated=1)]
    s = summarise(rows)
    assert s["accuracy"] == 50.0 and s["accuracy_substring"] == 100.0 and s["ee"] == 0.5 and s["n_test"] == 2
    assert s["cs"] == 0.5 and s["n_cs"] == 1 and s["grounded_precision"] is None and s["repetition_rate"] == 0.5
    assert s["fs"] == round(math.exp(12 / 6), 4)  # exp(sum NLL / sum tokens), not the mean of e^1 and e^4
    assert s["accuracy_ci"][0] < 50 < s["accuracy_ci"][1]


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
            j.verdict("Another question?", "Another answer.", WARBLER, CONCEPTS[WARBLER])
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


def test_fluency_is_the_answer_given_image_and_question(tiny):
    import torch
    from PIL import Image
    from selfsynth.tune import encode_batch
    scorer = load_fs_model(preset("quick", model=str(tiny), device="cpu"))
    model, proc, takes_images, name = scorer
    assert takes_images and "untuned base model" in name
    imgs = [Image.new("RGB", (64, 64), c) for c in ((200, 30, 30), (30, 30, 200))]
    qs, answers = ["What bird is this?", "Describe it."], ["The bird has a red crown and a short beak.", "A long, narrow tail."]
    got = answer_nll(scorer, imgs, qs, answers, label_finder(["Red Finch"]), batch_size=2)
    enc = encode_batch(proc, imgs, qs, answers)  # the training step's own encoding: the same tokens are scored
    labels = enc.pop("labels")
    with torch.no_grad(): logits = model(**enc).logits
    for i, (nll, n) in enumerate(got):
        ce = torch.nn.functional.cross_entropy(logits[i, :-1], labels[i, 1:], ignore_index=-100, reduction="sum")
        assert n == int((labels[i] != -100).sum()) and nll == pytest.approx(ce.item(), rel=1e-4)
    # class-name tokens are not scored: the same answer with and without "Red Finch" known as a class name
    (nll_named, n_named), = answer_nll(scorer, imgs[:1], qs[:1], ["This is a Red Finch."], label_finder(["Red Finch"]))
    (nll_plain, n_plain), = answer_nll(scorer, imgs[:1], qs[:1], ["This is a Red Finch."], label_finder(["Blue Finch"]))
    assert n_named < n_plain and nll_named < nll_plain
    assert pooled_perplexity(got) == pytest.approx(math.exp(sum(x for x, _ in got) / sum(n for _, n in got)), rel=1e-4)


def test_evaluate_stage_on_quick_world(tmp_path, tiny):
    from selfsynth.world import world_stage
    store = RunStore(tmp_path / "run", preset("quick", model=str(tiny), max_test_images=3, device="cpu", eval_max_new_tokens=8))
    world_stage(store)
    summary = evaluate_stage(store, "base", 0)
    rows = read_jsonl(store.path(eval_path("base", 0)))
    assert len(rows) == summary["n_test"] == 3
    for r in rows:
        assert set(r) >= {"id", "label", "question", "answer", "correct", "correct_substring", "ee", "cs", "fs", "fs_nll",
                          "fs_tokens", "grounded_precision", "repeated", "judge"}
        assert r["question"] == "What is the specific name of this bird? Provide an explanation."
        assert r["correct"] == is_correct(r["label"], r["answer"], LF_QUICK(store))
    assert summary["accuracy"] == round(100 * sum(r["correct"] for r in rows) / 3, 2) and len(summary["accuracy_ci"]) == 2
    assert summary["device"] == "cpu" and summary["judge"] == LexiconJudge.name and "untuned base model" in summary["fs_model"]
    m = store.manifest("eval/base/round-0")
    assert evaluate_stage(store, "base", 0) == summary and store.manifest("eval/base/round-0")["finished"] == m["finished"]


def test_base_model_properties(tmp_path):
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


def LF_QUICK(store): return label_finder(read_json_concepts(store))


def read_json_concepts(store):
    from selfsynth.data import read_concepts
    return read_concepts(store.path("world/concepts.json"))


def test_fs_ranks_corrupted_answers_worse():
    """FS measures fluency: on 64 answers of a mini reproduction (ours, round 4, runs/mini8: the first 4 test images of each
    class), a shuffled clause, a repeated claim and dropped function words score worse under the shipped base model in
    >= 90 % of all cases. Measured: shuffled 100 %, dropped 100 %, repeated 87.5 % (these answers already repeat claims)."""
    import tempfile
    from selfsynth.data import read_manifest, read_concepts
    from selfsynth.evaluate import fluency_check
    from selfsynth.models import load_image
    from selfsynth.world import build_world
    root = Path(__file__).resolve().parent
    rows = [json.loads(l) for l in (root / "data/fs_answers.jsonl").read_text().splitlines()]
    cfg = preset("mini", world_train_per_class=1, world_test_per_class=4, device="cpu",
                 model=str(root.parent / "data/mini-llava"))
    with tempfile.TemporaryDirectory() as d:
        world = build_world(cfg, Path(d) / "world")  # the same test images as the run's first 4 per class (world_seed 0)
        recs = {r.id: r for r in read_manifest(world / "manifest.jsonl", split="test")}
        assert len(rows) >= 50 and all(recs[r["id"]].label == r["label"] for r in rows)
        res = fluency_check(load_fs_model(cfg), [load_image(recs[r["id"]].image_path(world)) for r in rows],
                            [r["question"] for r in rows], [r["answer"] for r in rows], label_finder(read_concepts(world / "concepts.json")))
    worse = sum(v["n"] * v["worse"] for v in res.values()) / sum(v["n"] for v in res.values())
    assert worse >= 0.9, res
    assert all(v["n"] >= 50 and v["worse"] > 0.5 for v in res.values()), res  # every kind better than a coin


def test_fs_check_fails_on_a_scorer_that_ignores_the_text():
    "The check can fail: a scorer that gives every answer token the same probability ranks nothing."
    import torch
    class Flat(torch.nn.Module):
        device = torch.device("cpu")
        def forward(self, input_ids, **kw):
            return type("Out", (), dict(logits=torch.zeros(*input_ids.shape, 2048)))()
    from transformers import PreTrainedTokenizerFast
    from selfsynth.evaluate import fluency_check
    tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(__file__).resolve().parent.parent / "data/mini-llava/tokenizer.json"),
                                  eos_token="</s>", pad_token="</s>")
    answers = [f"This is a {FINCH} because it has a bright red crown, a short, thick conical beak and brown wings and back."] * 5
    res = fluency_check((Flat(), tok, False, "flat"), [None] * 5, ["What bird is this?"] * 5, answers, LF)
    assert all(v["worse"] == 0.0 for v in res.values()), res  # equal per-token perplexity: never worse
