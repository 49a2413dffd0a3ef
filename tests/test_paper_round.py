"benchmarks/paper_round.py at its tiny shape: the paper-scale command (cub-200 preset, a model folder, a sentence-transformers folder, a data root) runs round 1 end to end."
import importlib.util, json
from pathlib import Path


def test_paper_round_tiny(tmp_path):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_round.py"
    spec = importlib.util.spec_from_file_location("paper_round", path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path), "--shape", "tiny", "--images-per-class", "1"]) == 0, (tmp_path / "round.log").read_text()[-3000:]
    res = json.loads((tmp_path / "paper_round.json").read_text())
    assert set(res["stages_s"]) >= {"describe", "select", "synthesize__ours", "tune__ours__round-1", "eval__ours__round-1"}
    assert res["train"]["samples"] == 3 * 8 and res["train"]["epochs"] == 2  # 3 classes × 1 image, 8 answers each
    assert (tmp_path / "run" / "round-1" / "merged" / "config.json").exists()
