"Tests of selfsynth.basemodel: the pretraining text and images, the encoding, a tiny pretraining run, the shipped model."
import json
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
from selfsynth import world
from selfsynth.basemodel import (describe_text, parse_claims, claim_precision, part_qa, made_up_name, rewrite_example,
                                 rewrite_prompt, encode_conversation, conversation, pretraining_birds, pixel_values,
                                 pretrain, lr_at)
from selfsynth.models import make_random_llava, load_vlm, chat_prompt, generate, TINY_SIZES

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "mini-llava"


def _birds(n=40, seed=0):
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        a = world.random_values(rng)
        out.append({p: (None if rng.random() < .2 else v) for p, v in a.items()})
    return out


def test_descriptions_state_only_visible_truth_in_own_words():
    rng = np.random.default_rng(0)
    concept_phrases = [z.lower() for z in world.CONCEPT_TEXT.values()]
    for a in _birds():
        for _ in range(5):
            t = describe_text(a, rng)
            claims = parse_claims(t)
            assert claims and claim_precision(claims, a) == (len(claims), len(claims)), (t, a)
            assert not any(z in t.lower() for z in concept_phrases), t


def test_parse_claims_judges_wrong_and_hidden_parts():
    a = dict(world.random_values(np.random.default_rng(1)), crown="red", tail=None)
    claims = parse_claims("The bird has a scarlet cap, a dull red chest and a forked tail.")
    assert claims == {("crown", "red"), ("breast", "dull red"), ("tail", "forked")}
    correct, stated = claim_precision(claims, a)
    assert stated == 3 and correct == 1 + (a["breast"] == "dull red")


def test_descriptions_vary():
    a = world.random_values(np.random.default_rng(2))
    rng = np.random.default_rng(3)
    assert len({describe_text(a, rng) for _ in range(30)}) >= 25


def test_made_up_names_never_contain_a_world_class_name():
    from selfsynth.synthesize import normalize_label
    rng = np.random.default_rng(0)
    real = {normalize_label(c.name) for s in range(8) for c in world.world_spec(s, world.MAX_CLASSES).classes}
    for adjacent in (0.0, 1.0):  # stage 2's names, and the drill's names shaped like the world's
        names = [normalize_label(made_up_name(rng, adjacent)) for _ in range(3000)]
        assert len(set(names)) > 2000
        assert not [n for n in names if any(r in n for r in real)]
    families = {normalize_label(g) for g in world.GENERA}
    shaped = [n for n in names if n.split()[-1] in families]  # e.g. "golden naped finch": a world genus, other descriptors
    assert len(shaped) > 100


def test_rewrite_answers_restate_every_fact_in_order():
    "Issue 17: an explanation restates all given facts (expert wording included), once each, in the given order."
    rng = np.random.default_rng(1)
    expert, explained = 0, 0
    for a in _birds(200):
        prompt, answer = rewrite_example(a, rng)
        if "\n- " not in prompt: continue  # the inline layout
        facts = [l[2:] for l in prompt.split("\n") if l.startswith("- ")]
        expert += any(f in world.CONCEPT_TEXT.values() for f in facts)
        hits = [answer.find(f) for f in facts]
        if min(hits) < 0:
            assert max(hits) < 0 and len(answer.split()) <= 12, (prompt, answer)  # a simple answer: the name alone
            continue
        explained += 1
        assert hits == sorted(hits) and all(answer.count(f) == 1 for f in facts if not any(f in g for g in facts if g != f)), (prompt, answer)
    assert explained > 80 and expert > 40


def test_rewrite_prompt_matches_synthesis_and_answer_names_label():
    from selfsynth.synthesize import rewrite_prompt as synth_prompt
    assert rewrite_prompt("Ab Cd", ["x y", "z"], "Q?") == synth_prompt("Ab Cd", ["x y", "z"], "Q?")
    rng = np.random.default_rng(4)
    for a in _birds(30):
        prompt, answer = rewrite_example(a, rng)
        label = prompt.split("This is a picture of a ", 1)[1].split(" with the following", 1)[0]
        assert label in answer


def test_part_questions_say_hidden():
    a = dict(world.random_values(np.random.default_rng(5)), crown=None, tail=None)
    rng = np.random.default_rng(0)
    for p in ("crown", "tail"):
        for _ in range(5):
            q, ans = part_qa(p, a, rng)
            assert any(w in ans for w in ("not visible", "cannot see", "hidden")), ans


def test_encoding_matches_processor_and_masks_prompt(tmp_path):
    model, processor = load_vlm(make_random_llava(tmp_path / "m"), device="cpu")
    tok, n = processor.tokenizer, model.config.image_seq_length
    q, a = "What colour is the crown?", "The crown is red."
    ids, labels = encode_conversation(tok, [(q, a)], n)
    img = Image.new("RGB", (32, 32), "red")
    ref = processor(images=[img], text=[chat_prompt(processor, q) + " " + a + tok.eos_token])["input_ids"][0]
    assert ids == list(ref)
    kept = [t for t, l in zip(ids, labels) if l != -100]
    assert tok.decode(kept) == " " + a + tok.eos_token
    ids2, labels2 = encode_conversation(tok, [(q, a), ("And the tail?", "It is long.")], n)
    assert ids2.count(tok.bos_token_id) == 1 and tok.decode([t for t, l in zip(ids2, labels2) if l != -100]).count("</s>") == 2


def test_pretraining_birds_deterministic_and_pixel_values_match_processor(tmp_path):
    x1, a1 = pretraining_birds(3, seed=0, size=32)
    x2, a2 = pretraining_birds(3, seed=0, size=32)
    x3, _ = pretraining_birds(3, seed=1, size=32)
    assert torch.equal(x1, x2) and a1 == a2 and not torch.equal(x1, x3)
    _, processor = load_vlm(make_random_llava(tmp_path / "m"), device="cpu")
    ref = processor.image_processor(images=[Image.fromarray(x1[0].numpy())], return_tensors="pt")["pixel_values"]
    assert torch.allclose(ref, pixel_values(processor, x1[:1]), atol=1e-4)


def test_lr_schedule():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_tiny_pretraining_learns_and_saves(tmp_path):
    out = pretrain(tmp_path / "m", sizes=TINY_SIZES, n_images=96, gate_images=32, vision_steps=6, vision_batch_size=16,
                   steps=16, batch_size=8, lr=3e-3, corpus=200, vocab_size=400, log_every=4, checkpoint_every=4,
                   drill_steps=4, gate=0.0)  # a tiny tower cannot pass the real gate
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["language"][-1]["loss"] < log["language"][0]["loss"] and log["drill"][-1]["step"] == 4
    model, processor = load_vlm(out, device="cpu")
    assert len(generate(model, processor, [Image.new("RGB", (32, 32))], ["Describe this bird."], n=2, max_new_tokens=4)[0]) == 2


@pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="shipped model not built")
def test_shipped_model_loads_small_and_describes():
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) <= 50 * 2**20
    model, processor = load_vlm(SHIPPED, device="cpu")
    rng = np.random.default_rng([123, 9])
    img, attrs = world.render(world.random_values(rng), world.Scene(), 64)
    out = generate(model, processor, [img], ["Describe the bird in this image."], do_sample=False, max_new_tokens=48)[0][0]
    assert parse_claims(out), out


def _judge():
    from selfsynth.evaluate import LexiconJudge
    return LexiconJudge(world.world_spec(0, 16).concepts())


def test_description_stats_count_what_they_say():
    from selfsynth.basemodel import _description_stats
    attrs = {"a": dict(world.COMMON, crown="red")}  # buff breast, brown wings, short tail...
    texts = ["The bird has a scarlet cap and a short tail.",    # 2 claims, both right
             "This bird has a white chest and a grey chest.",   # two values for one part, both wrong
             "A bird with brown wings and brown wings.",        # a repeated claim (one distinct, right)
             "The bird has a scarlet cap and a short tail.",    # the first again: 3 distinct texts
             "It looks friendly and clever today."]             # two clauses the lexicon cannot map: wrong
    props, parts = _description_stats(_judge(), [dict(id="a", texts=texts)], attrs)
    assert props["description_claim_precision"]["value"] == round(5 / 9, 4)
    assert props["descriptions_two_values"]["value"] == 0.2 and props["descriptions_repeated_claim"]["value"] == 0.2
    assert props["distinct_descriptions_per_image"]["value"] == 4
    assert parts["precision_by_part"]["breast"]["value"] == 0 and parts["precision_by_part"]["crown"]["value"] == 1
    assert parts["stated_by_part"]["tail"]["value"] == 0.4 and parts["stated_by_part"]["eye"]["value"] == 0


def test_rewrite_stats_restated_in_other_words_and_not_given():
    from selfsynth.basemodel import _rewrite_stats
    from selfsynth.synthesize import label_finder
    j = _judge()
    given = ["a bright red crown", "a buff breast", "nests in tall reeds"]
    rows = [dict(id="a", label="Crimson-crowned Finch", kind="explain",
                 answer="This is a Crimson-crowned Finch. It has a bright red crown and a sandy chest, nests in tall "
                        "reeds and has a long tail."),  # all three restated ("sandy chest" = buff breast); the tail was not given
            dict(id="a", label="Crimson-crowned Finch", kind="simple", answer="This is a Crimson-crowned Finch."),
            dict(id="b", label="Crimson-crowned Finch", kind="fallback-simple", answer="This is an image of Crimson-crowned Finch.",
                 rewrite="It has a bright red crown.", rewrite_kind="cot")]  # as generated: no name, one of three restated
    p = _rewrite_stats(j, label_finder(j.concepts), rows, lambda r: given, "x")
    assert p["x_rewrite_label_rate"]["value"] == round(2 / 3, 4)
    assert p["x_concepts_restated"]["value"] == round(4 / 6, 4) and p["x_claims_not_given"]["value"] == 0.2
    assert p["x_rewrites_repeated_claim"]["value"] == 0


def test_ratio_interval_resamples_images():
    from selfsynth.basemodel import _ratio
    r = _ratio([9, 1, 8, 2], [10, 10, 10, 10])
    assert r["value"] == 0.5 and r["ci"][0] < 0.5 < r["ci"][1] and r["images"] == 4
    assert _ratio([3, 3], [3, 3])["ci"] == [1.0, 1.0] and _ratio([], [])["value"] is None


def test_description_stats_of_a_model_that_states_nothing():
    "A model whose descriptions parse to no claim: every per-part property is unmeasured (None), nothing raises."
    from selfsynth.basemodel import _description_stats
    props, _ = _description_stats(_judge(), [dict(id="a", texts=["zzz qqq", "the the the"])], {"a": dict(world.COMMON)})
    assert props["description_min_part_precision"] == dict(value=None, ci=None, n=0, part=None)
