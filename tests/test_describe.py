"Describe: prompts, degenerate samples dropped and counted, resume after a killed run, bad images."
import json
import pytest
from PIL import Image
import selfsynth.models as models
from selfsynth.config import preset, ConfigError
from selfsynth.store import RunStore, read_jsonl
from selfsynth.data import Record, write_manifest
from selfsynth.describe import (DESCRIBE_PROMPTS, DESCRIPTIONS, DROPPED, describe_prompts, degenerate_reason,
                                clean_samples, describe_stage)
from selfsynth.config import DATASETS


def test_prompts_per_dataset():
    for d in DATASETS:
        ps = describe_prompts(d, 3)
        assert len(set(ps)) == 3
        # every prompt restricts the description to what is visible on the object itself
        assert all(any(w in p.lower() for w in ("only", "without", "not describe", "ignore")) for p in ps), d
    with pytest.raises(ConfigError, match="describe_prompts"): describe_prompts("mini", 4)
    with pytest.raises(ConfigError, match="unknown dataset"): describe_prompts("imagenet", 1)


def test_degenerate_reasons():
    assert degenerate_reason("") == "empty" and degenerate_reason(" ... ") == "empty"
    assert degenerate_reason("red crown") == "too_short"
    assert degenerate_reason("crown crown crown crown") == "repeated"
    assert degenerate_reason("red red red red red blue crown") == "repeated"  # 5 of 7 words
    assert degenerate_reason("A small bird with a red crown.") is None
    assert degenerate_reason("the bird has a red crown and a red tail") is None  # repeats, but not one token's loop
    kept, dropped = clean_samples([" The crown is red. ", "", "wing wing wing"])
    assert kept == ["The crown is red."] and [d["reason"] for d in dropped] == ["empty", "repeated"]


def make_run(run_dir, n=4, model="unused", **over):
    "A run folder with a world of `n` coloured training squares and one test image."
    cfg = preset("quick", model=str(model), device="cpu", describe_samples=2, describe_max_new_tokens=6, **over)
    store = RunStore(run_dir, cfg)
    (run_dir / "world/images").mkdir(parents=True)
    recs = []
    for i in range(n):
        Image.new("RGB", (32, 32), (40 * i, 100, 200 - 40 * i)).save(run_dir / f"world/images/{i}.png")
        recs.append(Record(f"img{i}", f"images/{i}.png", "Red Finch" if i % 2 else "Blue Jay", "train"))
    recs.append(Record("test0", "images/0.png", "Blue Jay", "test"))
    write_manifest(recs, run_dir / "world/manifest.jsonl")
    return store


def test_degenerate_generations_dropped_and_counted(tmp_path, monkeypatch):
    script = {  # per image: the samples each (prompt, sample) gets
        "img0": ["A bird with a red crown.", "", "blue blue blue blue", "The wings are long and brown."],
        "img1": ["", "hi", "crown crown crown", "x"],  # nothing usable: excluded downstream
        "img2": ["Short black beak and white belly."] * 4,
    }
    calls = []
    def fake_generate(model, processor, images, questions, *, n=1, seed=0, **kw):
        calls.append(len(images))
        # images (paths) come in (image, prompt) pairs; identify an image by its colour
        ids = {(0, 100, 200): "img0", (40, 100, 160): "img1", (80, 100, 120): "img2"}
        out = []
        for k, im in enumerate(images):
            samples = script[ids[models.load_image(im).getpixel((0, 0))]]
            p = k % 2  # prompt index (2 prompts)
            out.append([samples[s * 2 + p] for s in range(n)])
        return out
    monkeypatch.setattr(models, "generate", fake_generate)
    monkeypatch.setattr(models, "load_vlm", lambda *a, **k: (None, None))
    store = make_run(tmp_path / "run", n=3, describe_prompts=2)
    m = describe_stage(store)
    rows = read_jsonl(store.path(DESCRIPTIONS))
    assert [r["id"] for r in rows] == ["img0", "img2"]  # img1 excluded, the test image never described
    # samples are interleaved: (sample 0: prompt 0, prompt 1), (sample 1: prompt 0, prompt 1)
    assert rows[0]["descriptions"] == ["A bird with a red crown.", "The wings are long and brown."]
    assert m["counts"] == dict(images=3, images_described=2, images_without_description=1, ids_without_description=["img1"],
                               samples=12, kept=6, dropped_empty=2, dropped_too_short=2, dropped_repeated=2)
    dropped = read_jsonl(store.path(DROPPED))
    assert len(dropped) == 6 and {d["id"] for d in dropped} == {"img0", "img1"}


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    "A real (random) LLaVA; the run is killed after its first chunk, resumed, and equals an uninterrupted run."
    tiny = models.make_random_llava(tmp_path / "tiny")
    real = models.generate
    ref_store = make_run(tmp_path / "ref", n=4, model=tiny)
    describe_stage(ref_store, chunk_images=2)
    ref = read_jsonl(ref_store.path(DESCRIPTIONS)) + read_jsonl(ref_store.path(DROPPED))

    store = make_run(tmp_path / "run", n=4, model=tiny)
    calls = []
    def killed_after_first_chunk(*a, **k):
        if calls: raise KeyboardInterrupt("killed")
        calls.append(1); return real(*a, **k)
    monkeypatch.setattr(models, "generate", killed_after_first_chunk)
    with pytest.raises(KeyboardInterrupt): describe_stage(store, chunk_images=2)
    assert store.manifest("describe") is None and not store.path(DESCRIPTIONS).exists()
    counted = []
    monkeypatch.setattr(models, "generate", lambda *a, **k: counted.append(len(a[2])) or real(*a, **k))
    m = describe_stage(store, chunk_images=2)
    assert counted == [2 * 3]  # only the second chunk (2 images x 3 prompts) was generated again
    assert read_jsonl(store.path(DESCRIPTIONS)) + read_jsonl(store.path(DROPPED)) == ref
    assert m["counts"]["images"] == 4 and m["counts"]["samples"] == 4 * 3 * 2
    counted.clear()
    assert describe_stage(store, chunk_images=2)["key"] == m["key"] and counted == []  # up to date: nothing generated


def test_max_train_images_and_missing_image(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_vlm", lambda *a, **k: (None, None))
    monkeypatch.setattr(models, "generate", lambda m, p, images, qs, *, n=1, **k: [["A bird with a red crown."] * n for _ in images])
    store = make_run(tmp_path / "run", n=4, max_train_images=3)
    assert describe_stage(store)["counts"]["images"] == 3
    (tmp_path / "run/world/images/1.png").write_bytes(b"not a png")
    store2 = RunStore(tmp_path / "run", store.cfg.replace(describe_samples=1))
    with pytest.raises(ValueError, match=r"1\.png"): describe_stage(store2)


def test_describe_across_two_processes_equals_one(tmp_path, cpu2_launch):
    "`gen_launch`: the stage's sampling split over 2 accelerate processes writes the very descriptions one process writes."
    import shlex
    tiny = models.make_random_llava(tmp_path / "tiny")
    one = make_run(tmp_path / "one", n=4, model=tiny, gen_batch_size=4)  # 12 prompts: 3 batches, 2 for one process
    describe_stage(one, chunk_images=4)
    two = make_run(tmp_path / "two", n=4, model=tiny, gen_batch_size=4, gen_launch=shlex.join(cpu2_launch))
    describe_stage(two, chunk_images=4)
    assert read_jsonl(two.path(DESCRIPTIONS)) == read_jsonl(one.path(DESCRIPTIONS))
    assert read_jsonl(two.path(DROPPED)) == read_jsonl(one.path(DROPPED))
