"""Where ours' repeated claims come from (issue 17): decoding temperature, and the rejection stage's candidates vs choices.

On a mini run folder, with the exact mini-world judge (`evaluate.LexiconJudge`), prints the share of answers that repeat
a claim, with Wilson 95 % intervals:
1. ours' round-1 training answers (`round-1/qa.jsonl`);
2. ours' round-1 model on the first `--images` test images, decoded greedily (the run's own evaluation answers), at
   rejection sampling's T 0.7, top-p 0.6, and at T 1.0 (cascade backend, top-k draw, seed 1);
3. for each rejection round k, all candidates (`round-k/candidates.jsonl`) and the chosen `best` rows (`round-k/qa.jsonl`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/repetition.py --run runs/mini11 [--images 160]
"""
from __future__ import annotations
import argparse, json
from pathlib import Path
from selfsynth.stats import wilson


def share(verdicts) -> str:
    k, n = sum(v["repeated"] for v in verdicts), len(verdicts)
    lo, hi = wilson(k, n) or (float("nan"),) * 2
    return f"{k} / {n} = {k / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/mini11")
    ap.add_argument("--images", type=int, default=160)
    a = ap.parse_args(argv)
    from selfsynth.data import read_concepts, read_manifest
    from selfsynth.evaluate import LexiconJudge
    from selfsynth.models import load_vlm, generate
    run = Path(a.run)
    judge = LexiconJudge(read_concepts(run / "world/concepts.json"))
    rows = lambda p: [json.loads(l) for l in open(p)]
    verdicts = lambda rs: judge.judge([r["answer"] for r in rs], [r["label"] for r in rs])
    print("round-1 training answers:", share(verdicts(rows(run / "round-1/qa.jsonl"))))
    ev = rows(run / "eval/ours/round-1.jsonl")[:a.images]
    print("round-1 model, greedy (the evaluation's answers):", share(verdicts(ev)))
    recs = {r.id: r for r in read_manifest(run / "world/manifest.jsonl", split="test")}
    images, questions = [str(recs[r["id"]].image_path(run / "world")) for r in ev], [r["question"] for r in ev]
    model, processor = load_vlm(run / "round-1/merged", device="cpu")
    for name, opts in (("T 0.7, top-p 0.6", dict(temperature=0.7, top_p=0.6)), ("T 1.0", dict(temperature=1.0))):
        answers = [x[0] for x in generate(model, processor, images, questions, seed=1, max_new_tokens=96, batch_size=32,
                                          backend="cascade", draw="topk", **opts)]
        print(f"round-1 model, {name}:", share(verdicts([dict(r, answer=x) for r, x in zip(ev, answers)])))
    k = 2
    while (run / f"round-{k}/candidates.jsonl").exists():
        best = [r for r in rows(run / f"round-{k}/qa.jsonl") if r.get("source") == "best"]
        print(f"round {k}: candidates", share(verdicts(rows(run / f"round-{k}/candidates.jsonl"))), "| chosen", share(verdicts(best)))
        k += 1


if __name__ == "__main__":
    main()
