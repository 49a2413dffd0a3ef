"""bf16 against fp32 on this CPU, at the mini model's shapes: does `dtype=bf16` make a CPU reproduction faster?

The config's `dtype: auto` is fp32 on a CPU. A CPU with AVX512-BF16 (or AMX) multiplies bf16 matrices faster than
fp32; one without falls back to a slow path. This times `F.linear` (the mini LLaVA's language MLP, 128 → 341, on the
token counts of one sampling batch and of one tuning batch) and one whole LoRA tuning step of the shipped model on a
real batch of world images, in both dtypes, and prints the ratios (> 1: bf16 is faster), with the CPU flags that decide it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpu_dtype.py [--model data/mini-llava] [--threads 1] [--json out.json]
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> list[str]:
    "The CPU's bf16-relevant feature flags, as the kernel reports them (empty where it masks them)."
    try: flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration): return []
    return sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni"))


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    return best


def linear_gflops(tokens: int, dtype, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(tokens, 128, generator=g).to(dtype), torch.randn(341, 128, generator=g).to(dtype)
    return 2 * tokens * 128 * 341 / seconds(lambda: F.linear(x, w), repeats) / 1e9


def tuning_step_s(model_path: str, dtype_name: str, repeats: int) -> float:
    "One LoRA step (forward, backward, AdamW) of the shipped model on 32 rendered birds with explain answers."
    from selfsynth.config import preset
    from selfsynth.models import load_vlm, resolve_dtype
    from selfsynth.tune import add_lora, encode_batch, answer_cross_entropy
    from selfsynth.world import build_world
    from selfsynth.data import read_manifest
    from selfsynth.models import load_image
    import tempfile
    cfg = preset("quick", dtype=dtype_name, device="cpu")
    dtype = resolve_dtype(dtype_name, "cpu")
    with tempfile.TemporaryDirectory() as d:
        world = build_world(preset("quick", world_classes=8, world_train_per_class=4, world_test_per_class=1), Path(d) / "w")
        recs = read_manifest(world / "manifest.jsonl", split="train")[:32]
        images = [load_image(r.image_path(world)) for r in recs]
    model, processor = load_vlm(model_path, device="cpu", dtype=dtype)
    model = add_lora(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params: p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4)
    answer = "The bird has a red crown, a short black beak and long blue wings. Therefore it is a Red Finch."
    batch = encode_batch(processor, images, ["What is the name of this bird? Explain."] * len(images), [answer] * len(images))
    labels = batch.pop("labels")
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            ce = answer_cross_entropy(model, batch, labels)
        ce.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return seconds(step, repeats)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "data" / "mini-llava"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = dict(threads=a.threads, cpu_flags=cpu_flags(), torch=torch.__version__,
               cpu_capability=torch.backends.cpu.get_cpu_capability())
    for tokens in (512, 3840):  # one sampling batch's decode step (prompts × samples); one tuning batch's tokens
        fp32, bf16 = (linear_gflops(tokens, dt, a.repeats * 10) for dt in (torch.float32, torch.bfloat16))
        res[f"linear_{tokens}_gflops"] = dict(fp32=round(fp32, 1), bf16=round(bf16, 1), bf16_speedup=round(bf16 / fp32, 2))
    fp32, bf16 = (tuning_step_s(a.model, dt, a.repeats) for dt in ("fp32", "bf16"))
    res["tuning_step_s"] = dict(fp32=round(fp32, 3), bf16=round(bf16, 3), bf16_speedup=round(fp32 / bf16, 2))
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
