"The cascade backend's `draw=\"topk\"`: transformers' sampling distribution computed on the top k only; same distribution, other samples."
import numpy as np, pytest, torch
from PIL import Image
from scipy.stats import chisquare
from transformers import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)
from selfsynth.config import RunConfig
from selfsynth.fastgen import draw_topk, generate_cascade, topk_probs
from selfsynth.models import generate, sample
from tests.test_bench_sampling import QUESTIONS, encode, tiny  # noqa: F401  (the tiny model fixture)


def hf_probs(logits, t, k, p, order=("temperature", "top_k", "top_p"), min_new=None):
    "transformers' own processors (in `generate`'s order unless `order` says otherwise), then the softmax `generate` samples from."
    make = dict(temperature=lambda: TemperatureLogitsWarper(t), top_k=lambda: TopKLogitsWarper(k), top_p=lambda: TopPLogitsWarper(p))
    procs = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(0, 1, min_new)] if min_new is not None else [])
    procs += [make[name]() for name in order]
    return procs(torch.zeros(len(logits), 0, dtype=torch.long), logits).softmax(-1)


def spread(logits, probs, ids):
    "`topk_probs`'s [B, K] probabilities over the whole vocabulary [B, V]."
    return torch.zeros_like(logits).scatter(1, ids, probs)


def assert_same_distribution(logits, got, want, atol=1e-6):
    "Per token, except that among *equal* logits only the multiset of probabilities must agree: which of two tied tokens top-p keeps is its sort's choice."
    for row, g, w in zip(logits.numpy(), got.numpy(), want.numpy()):
        og, ow = np.lexsort((g, row)), np.lexsort((w, row))  # by logit, then probability (distinct logits: the same token order)
        np.testing.assert_allclose(g[og], w[ow], atol=atol, rtol=0)


def random_logits(rows=8, vocab=300, seed=0):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("t,k,p", [(0.7, 50, 0.6), (1.0, 10, 1.0), (0.3, 400, 0.9), (0.7, 300, 0.6), (1.5, 1, 0.5),
                                   (1.0, 50, 0.0), (2.0, 120, 0.95)])
def test_probabilities_are_transformers(t, k, p):
    "Token for token on random float logits: top_p 1 and 0, top_k 1, of the whole vocabulary and larger than it."
    logits = random_logits()
    got = spread(logits, *topk_probs(logits, k, t, p))
    want = hf_probs(logits, t, k, p)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert ((got > 0).sum(-1) >= 1).all()


@pytest.mark.parametrize("t,k,p", [(0.7, 10, 0.6), (1.0, 10, 1.0), (1.0, 30, 0.8)])
def test_ties_are_kept_as_transformers_keeps_them(t, k, p):
    "Logits on a grid of 0.5 (like bf16's coarse values): ties at the k-th value stay, and ties at the nucleus' edge keep as many."
    logits = (random_logits() * 2).round() / 2
    kth = logits.topk(k).values[:, -1:]
    assert ((logits >= kth).sum(-1) > k).any()  # some row has a tie at the k-th value
    got = spread(logits, *topk_probs(logits, k, t, p))
    assert_same_distribution(logits, got, hf_probs(logits, t, k, p))
    assert ((got > 0).sum(-1) > k).any() if p == 1.0 else True  # more than k tokens kept where ties are


def test_a_tie_past_the_candidates_gives_none():
    logits = torch.zeros(2, 100)
    logits[0, :5] = torch.tensor([5., 4, 3, 2, 2])
    logits[1, :5] = torch.tensor([5., 4, 3, 2, 1])
    assert topk_probs(logits, 4, spare=1) is None  # the 5th logit ties the 4th, and a 6th might too
    probs, ids = topk_probs(logits, 4, spare=2)  # the 6th is smaller: the tie is seen whole and kept
    assert (probs[0] > 0).sum() == 5 and (probs[1] > 0).sum() == 4
    assert topk_probs(logits, 6, spare=16) is None  # the 6th is 0, like the 94 after it
    assert draw_topk(logits, 6) is None  # ... and the caller falls back to the exact draw


def test_the_end_token_banned_before_the_top_k():
    "The minimum length sets the end token to -inf before top-k (its processor comes first): the k are drawn from the others."
    logits = random_logits()
    eos = int(logits[0].argmax())  # row 0's most likely token
    banned = logits.index_fill(1, torch.tensor([eos]), float("-inf"))
    got = spread(logits, *topk_probs(banned, 20, 0.7, 0.9))
    torch.testing.assert_close(got, hf_probs(logits, 0.7, 20, 0.9, min_new=eos), atol=1e-6, rtol=0)
    assert (got[:, eos] == 0).all()


# a small distribution where the order of the cuts matters: top-k then top-p keeps 4 tokens, top-p then top-k keeps 5
SMALL = torch.tensor([[2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
T, K, P = 0.7, 5, 0.8


def chi2_p(counts, probs):
    "Pearson's test of counts against a distribution; a token it gives probability 0 but that was drawn fails outright."
    if (counts[probs == 0] > 0).any(): return 0.0
    keep = probs > 0
    return float(chisquare(counts[keep], probs[keep] / probs[keep].sum() * counts.sum()).pvalue)  # float32 sums: renormalise


def test_draws_follow_the_distribution():
    "30,000 seeded draws against transformers' distribution; the same comparison rejects a wrong cut (top-p before top-k)."
    right = hf_probs(SMALL, T, K, P)[0].double()
    wrong = hf_probs(SMALL, T, K, P, order=("temperature", "top_p", "top_k"))[0].double()
    assert (right > 0).sum() == 4 and (wrong > 0).sum() == 5  # the case is one where the order matters
    torch.manual_seed(0)
    counts = torch.bincount(draw_topk(SMALL.expand(30_000, -1).contiguous(), K, T, P), minlength=12).double().numpy()
    assert chi2_p(counts, right.numpy()) > 1e-3
    assert chi2_p(counts, wrong.numpy()) < 1e-3
    # the comparison itself has the power: draws from the wrong distribution are rejected against the right one
    torch.manual_seed(0)
    wrong_counts = torch.bincount(torch.multinomial(wrong, 30_000, replacement=True), minlength=12).double().numpy()
    assert chi2_p(wrong_counts, right.numpy()) < 1e-3


def free_tokens(model, enc, **opts):
    with torch.inference_mode(): return model.generate(**enc, **opts)[:, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("min_new_tokens", [0, 4])
def test_top_k_1_draws_are_eagers_tokens_end_token_included(tiny, min_new_tokens):
    "With top_k 1 both draws return the argmax: the fast draw must then give eager's very sequences, stopping and padding alike."
    model, processor = tiny
    enc = encode(processor, [(200, 30, 30), (20, 40, 220)], QUESTIONS)
    pad = processor.tokenizer.pad_token_id
    free = free_tokens(model, enc, max_new_tokens=16, do_sample=False, pad_token_id=pad)
    eos = next(t for t in free[1] if t in free[0] and t != pad)  # a token both greedy rows reach
    opts = dict(max_new_tokens=16, min_new_tokens=min_new_tokens, do_sample=True, top_k=1, temperature=0.7, top_p=0.9,
                pad_token_id=pad, eos_token_id=eos)
    torch.manual_seed(3)
    with torch.inference_mode(): want = model.generate(**enc, num_return_sequences=2, **opts)
    got = generate_cascade(model, enc, 2, draw="topk", **opts)
    L = enc["input_ids"].shape[1]
    assert torch.equal(got, want) and (got[:, L:L + min_new_tokens] != eos).all()
    if not min_new_tokens: assert got.shape[1] < L + 16  # every row ended early: the output is cut where eager cuts it


def test_sampled_draws_are_seeded_and_stop_at_the_end_token(tiny):
    "Real top-k and top-p: reproducible for a seed, other samples for another; no end token before min_new_tokens, padding after it."
    model, processor = tiny
    enc = encode(processor, [(200, 30, 30), (20, 40, 220)], QUESTIONS)
    pad, L = processor.tokenizer.pad_token_id, enc["input_ids"].shape[1]
    opts = dict(max_new_tokens=16, min_new_tokens=3, do_sample=True, temperature=0.3, top_k=5, top_p=0.95, pad_token_id=pad)
    torch.manual_seed(5)
    free = generate_cascade(model, enc, 4, draw="topk", **opts)[:, L + 3:]
    eos = int(torch.bincount(free.flatten()).argmax())  # the random model has no end token: take its most frequent one
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(generate_cascade(model, enc, 4, draw="topk", eos_token_id=eos, **opts))
    a, b, c = runs
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    with torch.inference_mode(): eager = model.generate(**enc, num_return_sequences=4, eos_token_id=eos, **opts)
    for out in (a, c, eager):  # the same rules hold for the eager path's samples
        new = out[:, L:]
        assert new.shape[1] <= 16 and (new[:, :3] != eos).all()
        ended = (new == eos).int().cumsum(1) > 0
        after = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1)  # the steps after a row's end token
        assert (new[after] == pad).all()  # (the random model may draw the pad token itself: no check before the end)
        assert (~after[:, -1]).any()  # the output ends at the last step some row was still running
    assert (a[:, L:] == eos).any(1).sum() >= 2 and (c[:, L:] == eos).any(1).sum() >= 2  # the checks saw rows end


def test_generate_and_sample_pass_the_draw(tiny):
    "`generate(draw=...)` reaches the cascade backend (the others draw exactly); `sample` takes the config's `gen_draw`."
    model, processor = tiny
    img = Image.new("RGB", (48, 40), (200, 30, 30))
    qs = QUESTIONS + ["Name it."]
    kw = dict(n=3, max_new_tokens=6, seed=1, batch_size=2, temperature=0.7, top_p=0.9)
    exact = generate(model, processor, [img] * 3, qs, **kw)
    topk = generate(model, processor, [img] * 3, qs, backend="cascade", draw="topk", **kw)
    assert topk == generate(model, processor, [img] * 3, qs, backend="cascade", draw="topk", **kw) and topk != exact
    assert exact == generate(model, processor, [img] * 3, qs, backend="cascade", draw="exact", **kw)
    assert exact == generate(model, processor, [img] * 3, qs, backend="eager", draw="topk", **kw)  # eager: transformers' own draw
    with pytest.raises(ValueError, match="draw"): generate(model, processor, [img], ["x"], backend="cascade", draw="gumbel")
    cache = {"vlm": (model, processor)}
    cfg = RunConfig(gen_batch_size=2)
    assert cfg.gen_backend == "cascade" and cfg.gen_draw == "topk"  # the default: the faster draw
    kw.pop("batch_size")
    assert sample(cfg, None, cache, [img] * 3, qs, **kw) == topk
    assert sample(cfg.replace(gen_draw="exact"), None, cache, [img] * 3, qs, **kw) == exact


def test_one_launched_process_draws_as_this_one(tiny, tmp_path):
    "`launch_generate` carries `draw` through its spec file to `_generate_part` (one plain process: no launcher needed)."
    import sys
    from selfsynth.fastgen import launch_generate
    model, processor = tiny
    model.save_pretrained(tmp_path / "m"); processor.save_pretrained(tmp_path / "m")
    paths = []
    for i, c in enumerate([(200, 30, 30), (20, 40, 220), (30, 160, 40)]):
        Image.new("RGB", (40, 40), c).save(tmp_path / f"im{i}.png"); paths.append(tmp_path / f"im{i}.png")
    kw = dict(n=3, max_new_tokens=6, seed=4, batch_size=2, backend="cascade", draw="topk")
    one = generate(model, processor, paths, QUESTIONS + ["Name it."], **kw)
    assert launch_generate(tmp_path / "m", paths, QUESTIONS + ["Name it."], [sys.executable], dtype="float32", **kw) == one
