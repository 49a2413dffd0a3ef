"""Issue 17 diagnostic: do a base model's repeated claims come from the random part order of its pretraining
descriptions? The model is fine-tuned on descriptions only (stage 2 with task mix {describe: 1}, `--steps` steps of 64,
AdamW 2e-4, birds of their own seed) twice from the same weights: once with the previous `describe_text` (parts in
random order, the control, kept verbatim below) and once with today's (parts in `world.PARTS` order, the same draws
otherwise). Each model, and the one given, then samples descriptions as the describe stage does (its three prompts,
T = 1.0, 10 samples each, 64 new tokens at most) on every 4th training image of a mini run's world; they are judged
as issue 17's protocol judges them (`basemodel._description_stats`: claim precision, descriptions with two values
for one part, descriptions repeating a claim). Prints and writes the numbers as json.

    .venv/bin/python benchmarks/description_order.py MODEL RUN_DIR [--steps 300] [--out results.json]

MODEL: a base model folder built with random-order descriptions; RUN_DIR: a mini run whose `world/` it reads.
"""
from __future__ import annotations
import argparse, copy, json, time


def random_order_describe_text(attributes: dict, rng) -> str:
    "The previous `basemodel.describe_text`: the chosen parts in random order."
    from selfsynth import basemodel as bm, world
    vis = [p for p in world.PARTS if attributes.get(p) is not None]
    if not vis: return "The bird is hidden; I cannot see any of its features."
    for _ in range(20):
        k = int(rng.integers(min(3, len(vis)), min(7, len(vis)) + 1))
        parts = [vis[i] for i in rng.permutation(len(vis))[:k]]
        phrases = [bm.part_phrase(p, attributes[p], rng) for p in parts]
        if len(phrases) >= 5 and rng.random() < .5:  # two sentences
            cut = int(rng.integers(2, len(phrases) - 1))
            text = (bm._FRAMES[int(rng.integers(len(bm._FRAMES)))].format(l=bm._join(phrases[:cut], rng)) + " "
                    + bm._SECOND[int(rng.integers(len(bm._SECOND)))].format(l=bm._join(phrases[cut:], rng)))
        else: text = bm._FRAMES[int(rng.integers(len(bm._FRAMES)))].format(l=bm._join(phrases, rng))
        if bm._concept_free(text): return text
    raise RuntimeError("describe_text: could not avoid the concept wording")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model"); ap.add_argument("run_dir")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from pathlib import Path
    import numpy as np, torch
    from PIL import Image
    from selfsynth import basemodel as bm, world
    from selfsynth.models import load_vlm, generate
    from selfsynth.describe import DESCRIBE_PROMPTS
    from selfsynth.data import read_manifest
    from selfsynth.evaluate import LexiconJudge
    torch.set_num_threads(a.threads); torch.set_flush_denormal(True)
    root = Path(a.run_dir) / "world"
    recs = read_manifest(root / "manifest.jsonl", split="train")[::4]
    judge = LexiconJudge(world.world_spec(0, 16).concepts())
    attrs_of = {r.id: r.attributes for r in recs}
    imgs = [Image.open(root / r.image).convert("RGB") for r in recs]

    def sample(model, processor) -> dict:
        out = {r.id: [] for r in recs}
        for k, p in enumerate(DESCRIBE_PROMPTS["mini"]):
            res = generate(model, processor, imgs, [p] * len(imgs), n=10, temperature=1.0, max_new_tokens=64, seed=100 + k, batch_size=32)
            for r, texts in zip(recs, res): out[r.id] += texts
        rows = [dict(id=i, texts=t) for i, t in out.items()]
        s, _ = bm._description_stats(judge, rows, attrs_of)
        keys = ("description_claim_precision", "descriptions_two_values", "descriptions_repeated_claim", "description_min_part_precision")
        return {k: dict(value=s[k]["value"], ci=s[k]["ci"]) | ({"part": s[k]["part"]} if "part" in s[k] else {}) for k in keys} | \
               dict(words=round(float(np.mean([len(t.split()) for r in rows for t in r["texts"]])), 2))

    base, processor = load_vlm(a.model, device="cpu")
    results = dict(model=str(a.model), images=len(recs), steps=a.steps, given=sample(base, processor))
    print("given", json.dumps(results["given"]), flush=True)
    images, attrs = bm.pretraining_birds(20000, seed=11, size=base.config.vision_config.image_size, workers=a.threads)
    today = bm.describe_text
    for arm, fn in (("random order", random_order_describe_text), ("PARTS order", today)):
        bm.describe_text = fn  # `conversation` looks it up in the module
        m, t0 = copy.deepcopy(base), time.time()
        try: bm.pretrain_language(m, processor.tokenizer, processor, images, attrs, steps=a.steps, batch_size=64, lr=2e-4,
                                  warmup=0.05, seed=11, log_every=100, task_p={"describe": 1.0})
        finally: bm.describe_text = today
        results[arm] = sample(m, processor) | dict(train_minutes=round((time.time() - t0) / 60, 1))
        print(arm, json.dumps(results[arm]), flush=True)
    if a.out: Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
