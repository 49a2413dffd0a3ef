import json
import pytest, torch


@pytest.fixture
def bench_json(capsys):
    "Run `selfsynth bench WHAT` on the CPU (one thread); check it succeeds and prints exactly one JSON line; return it."
    from selfsynth.bench import bench_main
    def run(what: str, **kw) -> dict:
        torch.set_num_threads(1)
        assert bench_main(what, device="cpu", scale="tiny", **kw) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1, lines
        return json.loads(lines[0])
    return run


@pytest.fixture
def cpu2_launch():
    "`accelerate launch` of 2 gloo processes (configs/accelerate_cpu2.yaml) on a port free now: runs close together must not collide."
    import socket, sys
    from pathlib import Path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    config = Path(__file__).resolve().parent.parent / "configs" / "accelerate_cpu2.yaml"
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", str(port)]


@pytest.fixture(scope="session")
def tiny_run_config():
    """A factory of quick-preset configs for whole rounds on a random tiny LLaVA in `tmp`: 4 classes of 2 train images,
    short generations, LoRA rank 4. `changes`: fields to set otherwise (checked)."""
    from selfsynth.config import preset
    from selfsynth.models import make_random_llava
    def make(tmp, **changes):
        return preset("quick", model=str(make_random_llava(tmp / "tiny")), run_dir=str(tmp / "run"), device="cpu",
                      world_classes=4, world_train_per_class=2, world_test_per_class=1, describe_prompts=1, describe_samples=2,
                      describe_max_new_tokens=10, synth_answers=2, synth_max_new_tokens=6, rs_queries=3, rs_samples=2,
                      rs_max_new_tokens=6, lora_r=4, lora_alpha=8, epochs=1, batch_size=8, rounds=3).replace(**changes)
    return make
