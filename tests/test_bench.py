"Selection benchmark: the public code's loop and the library agree, the JSON line, sanity of the speedup."
import json
import pytest, torch
from selfsynth.bench import (SCALES, synthetic_inputs, per_image_embeddings, baseline_scores, bench_selection,
                             bench_main, measure)
from selfsynth.config import ConfigError
from selfsynth.select import SelectionInputs, infonce_scores

KEYS = {"bench", "device", "shapes", "baseline_s", "baseline_images_timed", "optimised_s", "speedup", "max_abs_diff",
        "peak_mem_mb"}


@pytest.fixture
def one_thread():
    "Timings on a shared CPU are steadier on one thread."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ragged_inputs(seed=0):
    "Images with 1-4 descriptions, rows not grouped by image, two classes sharing a concept."
    g = torch.Generator().manual_seed(seed)
    owner = torch.tensor([i for i in range(9) for _ in range(1 + i % 4)])
    owner = owner[torch.randperm(len(owner), generator=g)]
    unit = lambda x: x / x.norm(dim=1, keepdim=True)
    return SelectionInputs([f"i{i}" for i in range(9)], ["AB"[i % 2] for i in range(9)],
                           unit(torch.randn(len(owner), 8, generator=g)), owner, torch.zeros_like(owner),
                           ["a", "b", "c", "shared", "d"], unit(torch.randn(5, 8, generator=g)),
                           {"A": [0, 1, 3], "B": [3, 2, 4]})


@pytest.mark.parametrize("tau", [0.1, 0.05])
def test_loop_in_float64_matches_library(tau, one_thread):
    for inp in (ragged_inputs(), synthetic_inputs(**SCALES["tiny"], seed=3)):
        want = infonce_scores(inp, tau=tau)
        got = baseline_scores(inp, per_image_embeddings(inp, torch.float64), range(len(inp.ids)), tau)
        assert [len(g) for g in got] == [len(w) for w in want]
        for g, w in zip(got, want): assert g == pytest.approx(w, rel=1e-10, abs=1e-9)


def test_synthetic_inputs_are_seeded_unit_and_structured():
    a, b = synthetic_inputs(**SCALES["tiny"], seed=1), synthetic_inputs(**SCALES["tiny"], seed=1)
    assert torch.equal(a.desc_emb, b.desc_emb) and not torch.equal(a.desc_emb, synthetic_inputs(**SCALES["tiny"], seed=2).desc_emb)
    assert torch.allclose(a.desc_emb.norm(dim=1), torch.ones(len(a.desc_emb)), atol=1e-5)
    own = a.concept_emb[[a.image_concepts(int(o)) for o in a.owner]]  # [N, |Z_c|, d]: each description's class concepts
    best_own = torch.einsum("nd,nkd->nk", a.desc_emb, own).max(1).values
    assert best_own.mean() > 0.6 > (a.desc_emb @ a.concept_emb.T).mean().abs()
    with pytest.raises(ValueError, match="n_images"): synthetic_inputs(1, 2, 1, 2, 4)


def test_json_line_has_the_keys(bench_json, one_thread):
    res = bench_json("selection", baseline_images=7)
    assert KEYS <= res.keys() and res["bench"] == "selection" and res["device"] == "cpu"
    assert res["baseline_images_timed"] == 7 and res["baseline_extrapolated"] is True
    assert res["shapes"]["n_descriptions"] == 120 * 10 and res["shapes"]["n_concepts"] == 12 * 5
    assert res["baseline_s"] == pytest.approx(res["baseline_timed_s"] * 120 / 7, rel=1e-3)
    assert 0 <= res["max_abs_diff"] < 1e-3  # float32 loop against the float64 library


def test_speedup_above_one_on_a_small_problem(one_thread):
    "Not a timing target: 30 images per class, so the loop does ~30x the flops plus its copies."
    res = bench_selection(dict(n_images=600, per_image=10, n_classes=20, per_class=8, dim=64), "cpu", baseline_images=60)
    assert res["speedup"] > 1, res


def test_measure_reports_peak_above_start():
    with measure("cpu") as m:
        x = torch.ones(2**25)  # 128 MiB
        del x
    assert m["s"] >= 0 and (m["peak_mb"] is None or 100 < m["peak_mb"] < 1000)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="huge"): bench_main("selection", scale="huge")
    with pytest.raises(ConfigError, match="unknown benchmark"): bench_main("nothing")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device"): bench_main("selection", device="cuda", scale="tiny")


def test_save_result_merges_benchmarks_of_one_device(tmp_path):
    from selfsynth.bench import save_result
    p1 = save_result({"device_name": "NVIDIA H200", "speedup": 150.0}, "selection", tmp_path)
    p2 = save_result({"device_name": "NVIDIA H200", "speedup": 4.2, "mfu": 0.41}, "sft", tmp_path)
    assert p1 == p2 and p1.name.startswith("nvidia-h200-") and p1.suffix == ".json"
    data = json.loads(p1.read_text())
    assert data["device"] == "NVIDIA H200" and data["selection"]["speedup"] == 150.0 and data["sft"]["mfu"] == 0.41
    assert [p.name for p in tmp_path.iterdir()] == [p1.name]  # no temporary file left behind
