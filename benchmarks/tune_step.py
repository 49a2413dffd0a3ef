"""A LoRA tuning step with its samples grouped by length into micro-batches vs one padded micro-batch (issue 16).

On a run's training answers (`qa.jsonl` of a round), with the run's config, in this process (one thread unless
OMP_NUM_THREADS says otherwise), for the first `--steps` optimiser steps of the run's own batch plan:
1. the gradient of the first step both ways: the largest difference, relative to the largest gradient entry;
2. padded tokens per step (text and image tokens) both ways;
3. seconds per step (encoding, forward, backward; the first step left out as warm-up) and their ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_step.py --run runs/mini11/seeds/2 [--qa round-1/qa.jsonl] [--steps 8]
"""
from __future__ import annotations
import argparse, time
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/mini")
    ap.add_argument("--qa", default="round-1/qa.jsonl", help="relative to --run")
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args(argv)
    import torch
    from selfsynth.config import load_config
    from selfsynth.layout import data_dir
    from selfsynth.models import load_vlm
    from selfsynth.tune import (add_lora, answer_cross_entropy, encode_batch, load_samples, micro_batches, plan_batches,
                                text_lengths, _examples)
    run = Path(a.run)
    cfg = load_config(run / "config.json")
    samples = load_samples(run / a.qa, run / data_dir(cfg.dataset))
    torch.manual_seed(cfg.seed)
    model, processor = load_vlm(cfg.model, device="cpu", dtype=torch.float32)
    model.config.use_cache = False
    model = add_lora(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    lengths = text_lengths(processor, samples)
    image_tokens = getattr(model.config, "image_seq_length", 0)
    steps = plan_batches(len(samples), cfg.batch_size, cfg.epochs, cfg.seed)[:a.steps]

    def step(k, groups):
        "One step's gradient (left in .grad) and its padded tokens."
        mbs = [encode_batch(processor, *_examples(samples, g, cfg, k)) for g in groups]
        n = sum(int((mb["labels"] != -100).sum()) for mb in mbs)
        for mb in mbs:
            labels = mb.pop("labels")
            (answer_cross_entropy(model, mb, labels) / n).backward()
        return sum(mb["input_ids"].numel() for mb in mbs)

    ways = {"one micro-batch": lambda b: micro_batches(b, 0, 1, len(b)),
            "grouped by length": lambda b: micro_batches(b, 0, 1, len(b), lengths)}
    grads = {}
    for name, split in ways.items():
        step(0, split(steps[0]))
        grads[name] = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
    scale = max(float(g.abs().max()) for g in grads["one micro-batch"])
    diff = max(float((x - y).abs().max()) for x, y in zip(*grads.values()))
    print(f"step 1 gradient: largest difference {diff:.2e}, relative to the largest entry {diff / scale:.2e}")
    secs, pads = {}, {}
    for name, split in ways.items():
        t, tokens = [], []
        for k, b in enumerate(steps):
            t0 = time.perf_counter()
            tokens.append(step(k, split(b)))
            model.zero_grad(set_to_none=True)
            t.append(time.perf_counter() - t0)
        secs[name], pads[name] = sum(t[1:]) / max(1, len(t) - 1), sum(tokens) / len(tokens)
        print(f"{name}: {pads[name]:.0f} tokens per step, {secs[name]:.3f} s per step "
              f"({torch.get_num_threads()} thread(s); image tokens {image_tokens} per sample are included)")
    print(f"ratio grouped / one: tokens {pads['grouped by length'] / pads['one micro-batch']:.2f}, "
          f"time {secs['grouped by length'] / secs['one micro-batch']:.2f}")


if __name__ == "__main__":
    main()
