"""The method page (nbs/09_method.ipynb) states each preset's hyper-parameters; they must be the presets' own.

`python tests/test_method_page.py` prints the table to paste into the page after a preset changes.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "nbs" / "09_method.ipynb"
PAPER = ("cub-200", "stanford-dogs", "fgvc-aircraft", "ham10000", "chest-xray", "pld")
ROWS = [  # (step, RunConfig field, symbol in the page's text)
    ("data", "world_classes", "classes"), ("data", "world_train_per_class", "train images / class"),
    ("data", "world_test_per_class", "test images / class"), ("models", "model", "f_θ"), ("models", "retriever", "e(.)"),
    ("1.1 describe", "describe_prompts", "prompts"), ("1.1 describe", "describe_samples", "samples / prompt"),
    ("1.1 describe", "describe_temperature", "temperature"), ("1.1 describe", "describe_max_new_tokens", "max new tokens"),
    ("1.2 select", "tau", "τ"), ("1.2 select", "select_std", "λ (mean + λ·std)"), ("1.2 select", "select_min", "k_min"),
    ("1.3 synthesise", "synth_answers", "answers / image"), ("1.3 synthesise", "synth_temperature", "temperature"),
    ("1.3 synthesise", "synth_max_new_tokens", "max new tokens"), ("1.3 synthesise", "query_p_simple", "p(simple)"),
    ("1.3 synthesise", "fuzzy_ratio", "difflib ratio"),
    ("2 tune", "lora_r", "LoRA r"), ("2 tune", "lora_alpha", "LoRA α"), ("2 tune", "lora_dropout", "LoRA dropout"),
    ("2 tune", "lr", "learning rate"), ("2 tune", "epochs", "epochs"), ("2 tune", "batch_size", "batch"),
    ("2 tune", "warmup_ratio", "warm-up"), ("2 tune", "grad_checkpointing", "gradient checkpointing"),
    ("2 tune", "augment", "augmentations"),
    ("3 rejection", "rs_queries", "queries / image"), ("3 rejection", "rs_samples", "samples / query (k)"),
    ("3 rejection", "rs_temperature", "temperature"), ("3 rejection", "rs_top_p", "top-p"),
    ("3 rejection", "rs_max_new_tokens", "max new tokens"),
    ("3 rejection", "rs_negatives_include_selected", "Z* among the negatives"),
    ("rounds", "rounds", "R"), ("evaluation", "eval_max_new_tokens", "max new tokens"),
]


def _fmt(v) -> str: return "—" if v is None else f"`{v}`"


def preset_table() -> str:
    "The markdown table of the page: one row per hyper-parameter, columns the paper datasets' presets, mini and quick."
    from selfsynth.config import preset
    paper = [preset(n) for n in PAPER]
    mini, quick = preset("mini"), preset("quick")
    lines = ["| step | hyper-parameter | `RunConfig` field | paper datasets | `mini` | `quick` |", "|---|---|---|---|---|---|"]
    for step, f, sym in ROWS:
        vals = {getattr(c, f) for c in paper}
        if f.startswith("world_"): p = "—"
        elif f == "model": p = " / ".join(f"`{v}`" for v in sorted(vals, key=[getattr(c, f) for c in paper].index)) + " (chest-xray)"
        else:
            assert len(vals) == 1, f"paper presets differ in {f}: add a column"
            p = _fmt(vals.pop())
        lines.append(f"| {step} | {sym} | `{f}` | {p} | {_fmt(getattr(mini, f))} | {_fmt(getattr(quick, f))} |")
    return "\n".join(lines)


def test_method_page_states_the_presets_hyper_parameters():
    text = "\n".join("".join(c["source"]) for c in json.loads(PAGE.read_text())["cells"] if c["cell_type"] == "markdown")
    assert preset_table() in text, f"the preset table of {PAGE.name} is stale: paste the output of `python tests/test_method_page.py`"


def test_no_page_cites_a_file_outside_the_repository():
    "The specs once kept outside the repository are now pages: nothing may send a reader to them."
    gone = re.compile(r"\b(METHOD|MINIWORLD|RESULTS|ARCHITECTURE)\.md\b")
    paths = [*(ROOT / "nbs").rglob("*.ipynb"), ROOT / "README.md", *(ROOT / "selfsynth").glob("*.py")]
    bad = [str(p.relative_to(ROOT)) for p in paths if gone.search(p.read_text())]
    assert not bad, f"cite the page that holds the content instead (method.html, world.html, index.html): {bad}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(preset_table())
