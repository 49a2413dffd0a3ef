"""One short round of the method at the paper's scale, for a lent GPU (issue 4, item 7).

Builds what a user points the package at, with random weights since nothing can be downloaded: a LLaVA of
llava-1.5-7b-hf's shape (CLIP ViT-L/14 at 336 px, a 32-layer 4096-wide Llama; its vocabulary is the package's
small BPE, so the embedding and head are smaller than the real 32k rows), a sentence-transformers encoder of
e5-large-v2's width, and a few images in CUB-200's distributed layout with a concept file. Then it runs the
real command, `selfsynth round --round K --preset cub-200 ...` (paper LoRA settings: r 128, α 256, batch 32; K = 1 by
default, 2 adds a round of rejection sampling), evaluates round K's model on the test images, and writes wall time, each stage's seconds, peak GPU memory (nvidia-smi, polled) and peak RSS to
OUT/paper_round.json.

    python benchmarks/paper_round.py OUT [--shape 7b|tiny] [--images-per-class 4] [--round 1]

`--shape tiny` runs the same path on a CPU in about a minute (how it is tested here).
"""
import argparse, json, resource, subprocess, sys, threading, time
from pathlib import Path
import torch

SHAPES = {  # new_llava's arguments
    "7b": dict(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16, vision_intermediate=4096,
               lm_hidden=4096, lm_layers=32, lm_heads=32, lm_intermediate=11008, max_positions=4096),
    "tiny": dict(image_size=64, patch_size=16, vision_hidden=64, vision_layers=2, vision_heads=2,
                 lm_hidden=64, lm_layers=2, lm_heads=2, max_positions=1024),
}
ENCODER_WIDTH = {"7b": (1024, 24, 16), "tiny": (32, 2, 2)}  # e5-large-v2: 1024 wide, 24 layers, 16 heads
CONCEPTS = ["red crown", "black wings", "white wing bars", "yellow breast", "short conical bill", "long tail",
            "streaked belly", "grey back", "orange legs", "black eye stripe", "spotted breast", "blue tail",
            "hooked bill", "brown nape", "white throat"]


def build_model(folder: Path, shape: str, device: str) -> int:
    "A random LLaVA of the named shape saved in bf16 (on a GPU) with its processor; its parameter count."
    from selfsynth.models import GENERIC_TEXT, new_llava, save_llava, train_tokenizer
    with torch.device(device): model, processor = new_llava(train_tokenizer(GENERIC_TEXT, vocab_size=2048), **SHAPES[shape])
    if device == "cuda": model = model.to(torch.bfloat16)
    save_llava(model, processor, folder)
    return sum(p.numel() for p in model.parameters())


def build_encoder(folder: Path, shape: str) -> None:
    "A random BERT with mean pooling, saved as a sentence-transformers folder (the retriever's format)."
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel
    from selfsynth.models import GENERIC_TEXT, train_tokenizer
    width, layers, heads = ENCODER_WIDTH[shape]
    tok = train_tokenizer(GENERIC_TEXT + CONCEPTS, vocab_size=2048)
    bert = folder / "bert"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=4 * width, pad_token_id=tok.pad_token_id)).save_pretrained(bert)
    tok.save_pretrained(bert)
    body = models.Transformer(str(bert), max_seq_length=128)
    SentenceTransformer(modules=[body, models.Pooling(width, pooling_mode="mean"), models.Normalize()]).save(str(folder))


def build_data(root: Path, per_class: int) -> Path:
    "Three classes of CUB-200 layout and a concept file of 15 phrases per class (the paper's table size); the concept file."
    from selfsynth.data import load_cub, write_fixture
    write_fixture("cub-200", root, n_classes=3, n_train=per_class, n_test=1, size=96, seed=0)
    labels = sorted({r.label for r in load_cub(root)})
    path = root / "concepts.json"
    path.write_text(json.dumps({l: [f"{c}" for c in CONCEPTS] for l in labels}, indent=1))
    return path


class GpuMemoryPoll:
    "Highest `memory.used` (MiB) nvidia-smi reports while the block runs (None without nvidia-smi)."
    def __enter__(self):
        self.peak, self.proc = None, None
        try: self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "500"],
                                          stdout=subprocess.PIPE, text=True)
        except FileNotFoundError: return self
        def read():
            for line in self.proc.stdout:
                if line.strip().isdigit(): self.peak = max(self.peak or 0, int(line))
        self.reader = threading.Thread(target=read, daemon=True); self.reader.start()
        return self
    def __exit__(self, *exc):
        if self.proc: self.proc.terminate(); self.reader.join(timeout=5)


def run_in_process(cmd: list, out: Path) -> subprocess.CompletedProcess:
    "What `selfsynth round` does, without its notebook: the run store opened from the same options, `run_round`, `evaluate_stage`."
    import logging
    from selfsynth.evaluate import evaluate_stage
    from selfsynth.rounds import run_round
    from selfsynth.runner import open_run
    opts = dict(zip(cmd[3::2], cmd[4::2]))  # the CLI's options after "-v round"
    sets = dict(v.split("=", 1) for k, v in zip(cmd[3:], cmd[4:]) if k == "--set")
    over = dict(model=opts["--model"], retriever=opts["--retriever"], data_root=opts["--data-root"],
                **{k: (int(v) if v.isdigit() else v) for k, v in sets.items()})
    logging.basicConfig(level=logging.INFO)
    try:
        store, k = open_run(opts["--run-dir"], "cub-200", over), int(opts["--round"])
        run_round(store, "ours", k); evaluate_stage(store, "ours", k); code = 0
    except Exception as e: logging.exception("round failed"); code = 1
    return subprocess.CompletedProcess(cmd, code, "", "")

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=SHAPES, default="7b")
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--round", type=int, default=1, help="run rounds 1..ROUND (2 and up: rejection sampling) and evaluate the last")
    ap.add_argument("--in-process", action="store_true",
                    help="call rounds.run_round here instead of the CLI (whose round notebook needs papermill and a kernel)")
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params = build_model(a.out / "model", a.shape, device)
    build_encoder(a.out / "encoder", a.shape)
    concepts = build_data(a.out / "data", a.images_per_class)
    built = time.perf_counter() - t0
    cmd = [sys.executable, "-c", "import sys; from selfsynth.cli import main; sys.exit(main())", "-v", "round", "--round", str(a.round),
           "--preset", "cub-200", "--model", str(a.out / "model"), "--retriever", str(a.out / "encoder"),
           "--data-root", str(a.out / "data"), "--run-dir", str(a.out / "run"), "--set", f"concepts={concepts}",
           "--set", f"device={device}", "--set", "gen_batch_size=8"]
    if a.shape == "tiny": cmd += ["--set", "describe_max_new_tokens=16", "--set", "synth_max_new_tokens=16",
                                  "--set", "eval_max_new_tokens=16", "--set", "batch_size=4"]
    t1 = time.perf_counter()
    with GpuMemoryPoll() as gpu:
        if a.in_process: proc = run_in_process(cmd, a.out)
        else: proc = subprocess.run(cmd, capture_output=True, text=True)
    res = dict(shape=a.shape, device=torch.cuda.get_device_name() if device == "cuda" else "cpu", params=params,
               train_images=3 * a.images_per_class, build_s=round(built, 1), round_s=round(time.perf_counter() - t1, 1),
               exit=proc.returncode, peak_gpu_mib=gpu.peak,
               peak_rss_mib=round(max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024),
               command=" ".join(cmd[3:]))
    res["stages_s"] = {m.stem: json.loads(m.read_text()).get("wall_s") for m in sorted((a.out / "run" / ".stages").glob("*.json"))}
    log = a.out / "run" / f"round-{a.round}" / "train_log.json"
    if log.exists(): res["train"] = {k: v for k, v in json.loads(log.read_text()).items() if k != "loss"}
    (a.out / "paper_round.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "round.log").write_text(proc.stdout + proc.stderr)
    print(json.dumps(res))
    return proc.returncode


if __name__ == "__main__": sys.exit(main())
