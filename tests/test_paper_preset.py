"A paper preset runs through the same code path: one short round of CUB-200 on a tree in CUB's real layout."
import importlib.util, json
from pathlib import Path
from selfsynth.cli import main
from selfsynth.data import write_fixture
from selfsynth.models import make_random_llava

SMALL = ["describe_samples=2", "synth_answers=2", "describe_max_new_tokens=8", "synth_max_new_tokens=8",
         "eval_max_new_tokens=8", "lora_r=4", "lora_alpha=8", "batch_size=4", "epochs=1", "rounds=1",
         "grad_checkpointing=false", "gen_batch_size=8"]


def _random_retriever(folder: Path) -> Path:
    "A tiny random sentence-transformers encoder (benchmarks/paper_round.py's): the retriever, so the offline judge is not it."
    spec = importlib.util.spec_from_file_location("paper_round", Path(__file__).resolve().parent.parent / "benchmarks/paper_round.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    mod.build_encoder(folder, "tiny")
    return folder


def test_cub_preset_runs_one_round_on_a_fixture_tree(tmp_path, capsys):
    root = write_fixture("cub-200", tmp_path / "cub", n_classes=3, n_train=2, n_test=1)
    model = make_random_llava(tmp_path / "llava")
    run = tmp_path / "run"
    argv = ["round", "--preset", "cub-200", "--data-root", str(root), "--model", str(model), "--run-dir", str(run), "--round", "1"]
    for s in SMALL: argv += ["--set", s]
    # the judge may not be the training signal: the packaged encoder as retriever is refused before anything runs
    assert main(argv + ["--retriever", "all-MiniLM-L6-v2"]) == 2 and not run.exists()
    assert "judge: config key 'retriever' is 'all-MiniLM-L6-v2'" in capsys.readouterr().err
    assert main(argv + ["--retriever", str(_random_retriever(tmp_path / "retriever"))]) == 0
    manifest = [json.loads(l) for l in (run / "data/manifest.jsonl").read_text().splitlines()]
    assert {r["label"] for r in manifest} and all(" " in r["label"] or r["label"].isalpha() for r in manifest)
    assert (run / "round-1/merged/config.json").exists() and (run / "notebooks/ours-round-1.ipynb").exists()
    rows = [json.loads(l) for l in (run / "eval/ours/round-1.jsonl").read_text().splitlines()]
    assert len(rows) == sum(r["split"] == "test" for r in manifest)
