"""Seconds of one rejection-sampling-sized `generate` call with the exact draw and with the top-k draw (issue: sampling cost).

The cascade backend (`gen_backend: cascade`) draws each token either with transformers' processors over the whole
vocabulary (`draw="exact"`: eager's very tokens) or among the k largest logits only (`draw="topk"`: the same
distribution, other samples). This times the whole `generate` call (image processing, prefill, decode, draw) for
a mini run's rejection-sampling batch: 64 real world images, one explain or CoT query each, 3 samples per query,
up to 96 new tokens, T 0.7, top-p 0.6, top-k 50 (the model's generation config), on one thread by default.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampling_draw.py [--model data/mini-llava] \\
        [--images 'runs/mini10/world/images/train_*.png'] [--repeats 3] [--json out.json]

Each draw runs `--repeats` times after a warm-up, alternating so that a machine's load drifts over both alike;
the minimum is reported. The samples differ between the draws, and so may their lengths: the mean number of new
tokens per sample is printed beside the times (the decode's work follows it).
"""
from __future__ import annotations
import argparse, glob, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "data" / "mini-llava"))
    ap.add_argument("--images", default=str(ROOT / "runs" / "mini10" / "world" / "images" / "train_*.png"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from selfsynth.models import generate, load_vlm
    from selfsynth.synthesize import QUERIES
    images = sorted(glob.glob(args.images))[:args.prompts]
    if len(images) < args.prompts: sys.exit(f"{args.images}: {len(images)} images, {args.prompts} wanted")
    pool = QUERIES["mini"]["explain"] + QUERIES["mini"]["cot"]
    questions = [pool[i % len(pool)] for i in range(len(images))]
    model, processor = load_vlm(args.model, device="cpu", dtype="float32")
    kw = dict(n=args.samples, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.new_tokens,
              seed=0, batch_size=args.prompts, backend="cascade")
    tok = processor.tokenizer

    def run(draw: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        answers = generate(model, processor, images, questions, draw=draw, **kw)
        s = time.perf_counter() - t0
        lengths = [len(tok(a, add_special_tokens=False)["input_ids"]) for x in answers for a in x]
        return s, sum(lengths) / len(lengths)

    draws = ("exact", "topk")
    for d in draws: run(d)  # warm-up: allocator, kernels' first calls
    times, lengths = {d: [] for d in draws}, {}
    for _ in range(args.repeats):
        for d in draws:
            s, lengths[d] = run(d)
            times[d].append(s)
    best = {d: min(v) for d, v in times.items()}
    res = dict(bench="sampling_draw", model=args.model, prompts=len(images), samples=args.samples,
               new_tokens=args.new_tokens, temperature=args.temperature, top_p=args.top_p,
               top_k=model.generation_config.top_k or 50, threads=args.threads,
               seconds={d: [round(x, 3) for x in v] for d, v in times.items()},
               best_s={d: round(v, 3) for d, v in best.items()},
               mean_answer_tokens={d: round(v, 1) for d, v in lengths.items()},
               speedup=round(best["exact"] / best["topk"], 3),
               load_1min=round(os.getloadavg()[0], 2), torch=torch.__version__)
    for d in draws:
        print(f"{d:>5}: best {best[d]:7.2f} s of {args.repeats} ({', '.join(f'{x:.2f}' for x in times[d])}); "
              f"{lengths[d]:.1f} tokens per answer")
    print(f"exact / topk: {res['speedup']:.2f}x  (1-min load {res['load_1min']})")
    if args.json: Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
