"A paper preset runs through the same code path: one short round of CUB-200 on a tree in CUB's real layout."
import json
from selfsynth.cli import main
from selfsynth.data import write_fixture
from selfsynth.models import make_random_llava

SMALL = ["describe_samples=2", "synth_answers=2", "describe_max_new_tokens=8", "synth_max_new_tokens=8",
         "eval_max_new_tokens=8", "lora_r=4", "lora_alpha=8", "batch_size=4", "epochs=1", "rounds=1",
         "grad_checkpointing=false", "gen_batch_size=8"]


def test_cub_preset_runs_one_round_on_a_fixture_tree(tmp_path):
    root = write_fixture("cub-200", tmp_path / "cub", n_classes=3, n_train=2, n_test=1)
    model = make_random_llava(tmp_path / "llava")
    run = tmp_path / "run"
    argv = ["round", "--preset", "cub-200", "--data-root", str(root), "--model", str(model),
            "--retriever", "all-MiniLM-L6-v2", "--run-dir", str(run), "--round", "1"]
    for s in SMALL: argv += ["--set", s]
    assert main(argv) == 0
    manifest = [json.loads(l) for l in (run / "data/manifest.jsonl").read_text().splitlines()]
    assert {r["label"] for r in manifest} and all(" " in r["label"] or r["label"].isalpha() for r in manifest)
    assert (run / "round-1/merged/config.json").exists() and (run / "notebooks/ours-round-1.ipynb").exists()
    rows = [json.loads(l) for l in (run / "eval/ours/round-1.jsonl").read_text().splitlines()]
    assert len(rows) == sum(r["split"] == "test" for r in manifest)
