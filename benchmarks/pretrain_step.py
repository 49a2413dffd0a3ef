"""A language-pretraining step of the mini base model (issue 17): micro-batches of like length, LM head on answer tokens
only (`basemodel.backward_step`), vs the step's padded batch through the model's own loss.

Mini model sizes, a tokenizer trained on `--corpus` conversations, `--birds` rendered birds, batch 64 as the shipped
settings, in this process (two threads unless --threads says otherwise), on `--steps` batches of stage 2:
1. the gradient of the first step both ways: the largest difference, relative to the largest gradient entry;
2. tokens per step (padding included) both ways, and the tokens per conversation by task;
3. seconds per step (forward, backward; the first two steps left out as warm-up) and their ratio.

    .venv/bin/python benchmarks/pretrain_step.py [--steps 12] [--threads 2]
"""
from __future__ import annotations
import argparse, time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--birds", type=int, default=2000)
    ap.add_argument("--corpus", type=int, default=2000)
    a = ap.parse_args(argv)
    import numpy as np
    import torch
    from selfsynth import basemodel as bm
    from selfsynth.models import MINI_SIZES, new_llava, train_tokenizer
    torch.set_num_threads(a.threads); torch.set_flush_denormal(True)
    o = bm.PRETRAIN_DEFAULTS
    tok = train_tokenizer(bm.pretraining_corpus(a.corpus, 0), o["vocab_size"])
    model, proc = new_llava(tok, seed=0, **MINI_SIZES)
    images, attrs = bm.pretraining_birds(a.birds, 0, MINI_SIZES["image_size"])
    n_tok = model.config.image_seq_length
    batches = lambda call_tokens: bm.ConversationBatches(tok, attrs, n_tok, o["batch_size"], 0, 7003, bm.TASK_P, 0.0, call_tokens)
    grouped, padded = batches(128), batches(10 ** 9)
    model.model.vision_tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train(); model.model.vision_tower.eval()
    no_autocast = torch.autocast("cpu", enabled=False)

    def own_loss(micro):  # the padded batch through the model's own loss, as before
        (b,) = micro
        pix = bm.pixel_values(proc, bm._flip(images[b["idx"]], b["flip"]))
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], pixel_values=pix).loss
        loss.backward()
        return loss.item()

    def grads(step_fn, micro):
        model.zero_grad(set_to_none=True); step_fn(micro)
        return [p.grad.clone() for p in params]

    g_own = grads(own_loss, padded[0])
    g_new = grads(lambda m: bm.backward_step(model, proc, images, m, no_autocast), grouped[0])
    scale = max(g.abs().max().item() for g in g_own)
    diff = max((x - y).abs().max().item() for x, y in zip(g_own, g_new))
    print(f"gradient, first step: largest difference {diff:.2e}, relative to the largest entry {diff / scale:.2e}")

    steps = range(a.steps)
    tokens = {k: np.mean([sum(m["input_ids"].numel() for m in f[s]) for s in steps]) for k, f in (("padded", padded), ("grouped", grouped))}
    calls = np.mean([len(grouped[s]) for s in steps])
    print(f"tokens per step: padded {tokens['padded']:.0f}, grouped {tokens['grouped']:.0f} in {calls:.1f} calls "
          f"(ratio {tokens['padded'] / tokens['grouped']:.2f})")
    rng = np.random.default_rng(0)
    by_task = {}
    for _ in range(600):
        task, turns = bm.conversation(attrs[int(rng.integers(len(attrs)))], rng)
        by_task.setdefault(task, []).append(len(bm.encode_conversation(tok, turns, n_tok)[0]))
    print("tokens per conversation, by task (median, 95th percentile): "
          + ", ".join(f"{t} {np.median(v):.0f} / {np.percentile(v, 95):.0f}" for t, v in sorted(by_task.items())))

    def seconds(step_fn, source):
        ts = []
        for s in steps:
            micro = source[s]
            model.zero_grad(set_to_none=True)
            t = time.perf_counter(); step_fn(micro); ts.append(time.perf_counter() - t)
        return float(np.mean(ts[2:]))
    t_own = seconds(own_loss, padded)
    t_new = seconds(lambda m: bm.backward_step(model, proc, images, m, no_autocast), grouped)
    print(f"seconds per step ({a.threads} threads): padded, own loss {t_own:.3f}; grouped, answer tokens {t_new:.3f}; "
          f"ratio {t_own / t_new:.2f}")


if __name__ == "__main__":
    main()
