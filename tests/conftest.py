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
