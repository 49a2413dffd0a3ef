"Shared-prefill sampling: the eager path's tokens for the same seed, the model's distribution; `bench sampling`."
import pytest, torch
from PIL import Image
from selfsynth.bench import (bench_sampling, random_llava, prompt_batch, kv_bytes_per_token, decode_floor_s,
                             prompts_for_memory)
from selfsynth.fastgen import generate_cascade, generate_shared
from selfsynth.models import make_random_llava, load_vlm, chat_prompt, generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "The tiny random LLaVA with sharpened attention: at its initial scale it attends almost uniformly, which would hide a wrong position or mask."
    torch.set_num_threads(1)
    model, processor = load_vlm(make_random_llava(tmp_path_factory.mktemp("m") / "tiny"), device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and name.rsplit(".", 2)[-2] in ("q_proj", "k_proj"): p.mul_(8)
    return model, processor


def encode(processor, colours, questions):
    "Left-padded prompts of different lengths, as `generate` builds them."
    processor.tokenizer.padding_side = "left"
    return processor(images=[Image.new("RGB", (40, 40), c) for c in colours],
                     text=[chat_prompt(processor, q) for q in questions], padding=True, return_tensors="pt")


QUESTIONS = ["What colour is the crown?", "Describe the bird in this picture, its wings and its tail."]


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("do_sample", [True, False])
def test_same_tokens_as_eager_for_the_same_seed(tiny, static, do_sample):
    model, processor = tiny
    enc = encode(processor, [(200, 30, 30), (20, 40, 220)], QUESTIONS)
    assert (enc["attention_mask"] == 0).any()  # left padding is exercised
    opts = dict(max_new_tokens=10, do_sample=do_sample, pad_token_id=processor.tokenizer.pad_token_id,
                output_logits=True, return_dict_in_generate=True)
    n = 4 if do_sample else 1  # transformers allows no greedy num_return_sequences: they would all be equal
    torch.manual_seed(7)
    with torch.inference_mode(): want = model.generate(**enc, num_return_sequences=n, **opts)
    torch.manual_seed(7)
    got = generate_shared(model, enc, n, static=static, **opts)
    assert got.sequences.shape == want.sequences.shape == (2 * n, enc["input_ids"].shape[1] + 10)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits): assert torch.allclose(a, b, atol=1e-5)  # every step's logits, every row
    if do_sample: assert len({tuple(r) for r in got.sequences[:4, -10:].tolist()}) == 4  # a prompt's 4 samples differ


@pytest.mark.parametrize("do_sample", [True, False])
@pytest.mark.parametrize("min_new_tokens", [0, 10])
def test_cascade_gives_eager_tokens_for_the_same_seed(tiny, do_sample, min_new_tokens):
    model, processor = tiny
    enc = encode(processor, [(200, 30, 30), (20, 40, 220)], QUESTIONS)
    opts = dict(max_new_tokens=10, min_new_tokens=min_new_tokens, do_sample=do_sample, top_p=0.9,
                pad_token_id=processor.tokenizer.pad_token_id)
    n = 4 if do_sample else 1
    torch.manual_seed(7)
    with torch.inference_mode(): want = model.generate(**enc, num_return_sequences=n, **opts)
    torch.manual_seed(7)
    got = generate_cascade(model, enc, n, **opts)
    assert got.shape == want.shape == (2 * n, enc["input_ids"].shape[1] + 10) and torch.equal(got, want)
    assert model.config.text_config._attn_implementation == "sdpa"  # the model's own attention is back


def test_cascade_stops_where_generate_stops(tiny):
    "With an end token that both greedy continuations reach early, both paths stop at the same step, padded alike."
    model, processor = tiny
    enc = encode(processor, [(200, 30, 30), (20, 40, 220)], QUESTIONS)
    opts = dict(max_new_tokens=40, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    L = enc["input_ids"].shape[1]
    with torch.inference_mode(): free = model.generate(**enc, **opts)[:, L:].tolist()
    eos = next(t for t in free[0][:20] if t in free[1][:20] and t != opts["pad_token_id"])
    with torch.inference_mode(): want = model.generate(**enc, eos_token_id=eos, **opts)
    got = generate_cascade(model, enc, 1, eos_token_id=eos, **opts)
    assert want.shape[1] < L + 40 and torch.equal(got, want)
    with pytest.raises(ValueError, match="num_beams"): generate_cascade(model, enc, 2, max_new_tokens=3, num_beams=2)


def test_generate_backends_give_the_same_answers(tiny):
    model, processor = tiny
    img = Image.new("RGB", (48, 40), (200, 30, 30))
    kw = dict(n=3, max_new_tokens=6, seed=1, batch_size=2)
    a = generate(model, processor, [img] * 3, QUESTIONS + ["Name it."], **kw)
    assert a == generate(model, processor, [img] * 3, QUESTIONS + ["Name it."], backend="shared", **kw)
    assert a == generate(model, processor, [img] * 3, QUESTIONS + ["Name it."], backend="cascade", **kw)
    with pytest.raises(ValueError, match="backend"): generate(model, processor, [img], ["x"], backend="vllm")


def chi_square(counts, p, n):
    "Pearson's statistic over the tokens expected at least 5 times, the rest pooled; and its degrees of freedom."
    exp = p * n
    big = exp >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([exp[big], exp[~big].sum()[None]])
    return float(((obs - exp) ** 2 / exp).sum()), int(big.sum())


def test_first_tokens_follow_the_models_distribution(tiny):
    "3,000 first tokens of one prompt against softmax(logits / T); the other prompt's distribution is rejected."
    model, processor = tiny
    t, n = 0.05, 3000  # a low temperature makes the random model's near-uniform distribution peaked
    encs = [encode(processor, [c], [q]) for c, q in zip([(200, 30, 30), (20, 40, 220)], QUESTIONS)]
    with torch.inference_mode(): p = [(model(**e).logits[0, -1] / t).softmax(-1).double() for e in encs]
    torch.manual_seed(0)
    ids = generate_shared(model, encs[0], n, max_new_tokens=1, do_sample=True, temperature=t, top_k=0,
                          pad_token_id=processor.tokenizer.pad_token_id)
    counts = torch.bincount(ids[:, -1], minlength=len(p[0])).double()
    own, df = chi_square(counts, p[0], n)
    other, _ = chi_square(counts, p[1], n)
    assert df >= 10 and own < df + 4 * (2 * df) ** 0.5, (own, df)  # mean df, sd sqrt(2 df)
    assert other > 20 * (df + 4 * (2 * df) ** 0.5)


def test_bench_sampling_json_line(bench_json):
    res = bench_json("sampling")
    s = res["shapes"]
    assert res["bench"] == "sampling" and res["device"] == "cpu" and set(res["backends"]) == {"eager", "shared", "cascade"}
    assert s["sequences"] == s["prompts"] * s["samples"] == 8 and s["prompt_tokens"] == 1 + 16 + 8
    for name, run in res["backends"].items():  # new tokens per second of every sequence, all run to new_tokens
        assert run["tokens_per_s"] == pytest.approx(8 * s["new_tokens"] / run["s"], rel=2e-3)
    assert res["speedup"] == pytest.approx(res["optimised_tokens_per_s"] / res["baseline_tokens_per_s"], rel=2e-3)
    assert res["same_tokens_as_eager"] == {"shared": 1.0, "cascade": 1.0}  # float32 on a CPU: the very same samples
    assert 0 < res["floor_fraction"] < 1 and res["bandwidth_gb_s"] > 0.1
    assert res["backends"]["cascade"]["decode_floor_s"] < res["backends"]["eager"]["decode_floor_s"]  # its prompts read once


def test_shared_prefill_wins_when_prefill_dominates():
    "144 image tokens, 10 samples, 2 new tokens: eager prefills 10 copies of each prompt (about 3x on this machine)."
    torch.set_num_threads(1)
    res = bench_sampling(dict(model="small", prompts=1, samples=10, image_tokens=144, text_tokens=8, new_tokens=2), "cpu")
    assert res["speedup"] > 1.5, res


def test_random_llava_shapes_and_decode_floor():
    model = random_llava("tiny", 16)
    enc = prompt_batch(model, 3, 5, seed=1)
    assert enc["input_ids"].shape == (3, 22) and (enc["input_ids"][:, 1:17] == model.config.image_token_id).all()
    assert torch.equal(enc["input_ids"], prompt_batch(model, 3, 5, seed=1)["input_ids"])
    with torch.no_grad(): assert model(**enc).logits.shape == (3, 22, 512)  # 16 image features fill the 16 slots
    t = model.config.text_config
    assert kv_bytes_per_token(model) == 2 * t.num_hidden_layers * t.hidden_size * 4
    lm_weights = sum(p.numel() for p in model.get_decoder().parameters()) * 4  # embedding table and head: same size
    assert decode_floor_s(model, 2, 10, 3, 1e9) == pytest.approx((3 * lm_weights + 2 * kv_bytes_per_token(model) * (10 + 11 + 12)) / 1e9)
    # one prompt for both sequences: its 10 tokens read once a step, each sequence's own 0, 1, 2 tokens
    assert decode_floor_s(model, 2, 10, 3, 1e9, prompts=1) == pytest.approx((3 * lm_weights + kv_bytes_per_token(model) * (30 + 2 * 3)) / 1e9)
    assert prompts_for_memory(model, 10, 100, "cpu") == 1
    with pytest.raises(ValueError, match="square"): random_llava("tiny", 15)


def test_two_processes_sample_what_one_does(tiny, tmp_path, cpu2_launch):
    "accelerate launch, 2 gloo processes: every other batch each, merged in order; the same answers as one process."
    from selfsynth.fastgen import launch_generate
    model, processor = tiny
    model.save_pretrained(tmp_path / "m"); processor.save_pretrained(tmp_path / "m")
    paths = []
    for i, c in enumerate([(200, 30, 30), (20, 40, 220), (30, 160, 40), (240, 240, 20), (90, 90, 90)]):
        Image.new("RGB", (40, 40), c).save(tmp_path / f"im{i}.png"); paths.append(tmp_path / f"im{i}.png")
    questions = [QUESTIONS[i % 2] for i in range(5)]
    kw = dict(n=3, max_new_tokens=6, seed=4, batch_size=2)
    one = generate(model, processor, paths, questions, **kw)
    two = launch_generate(tmp_path / "m", paths, questions, cpu2_launch, dtype="float32", backend="cascade", **kw)
    assert two == one and len({a for x in one for a in x}) > 5  # the samples differ among themselves
