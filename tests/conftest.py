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
