"Tests of the mini world: determinism, ground truth, fine-grained classes, validation, manifest, stage."
import hashlib, itertools
from dataclasses import replace
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from selfsynth.config import preset
from selfsynth.data import read_manifest, read_concepts
from selfsynth.store import RunStore
import selfsynth.world as world_mod
from selfsynth.world import (PARTS, VALUES, VALUE_SPEC, CONCEPT_TEXT, BirdClass, Concept, Scene, WorldSpec, build_world,
                             read_world, render, validate_spec, world_spec, world_stage, random_values)


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cfg():
    return preset("quick", world_train_per_class=6, world_test_per_class=3)  # 12 classes, 108 images


@pytest.fixture(scope="module")
def world(cfg, tmp_path_factory):
    return build_world(cfg, tmp_path_factory.mktemp("world"))


def test_same_seed_same_bytes_other_seed_differs(cfg, world, tmp_path):
    again = build_world(cfg, tmp_path / "again")
    assert _digest(world) == _digest(again)
    assert _digest(build_world(cfg.replace(seed=1), tmp_path / "train-seed")) == _digest(world)  # the training seed: same world
    other = build_world(cfg.replace(world_seed=1), tmp_path / "other")
    d0, d1 = _digest(world), _digest(other)
    assert d0.keys() == d1.keys()
    assert sum(d0[k] != d1[k] for k in d0 if k.startswith("images/")) > 0.9 * len(d0)
    assert [c.name for c in world_spec(0, 16).classes] != [c.name for c in world_spec(1, 16).classes]


def test_manifest_readable_and_complete(cfg, world):
    records = read_manifest(world / "manifest.jsonl")
    concepts = read_concepts(world / "concepts.json")
    assert len(concepts) == cfg.world_classes
    assert sum(r.split == "train" for r in records) == cfg.world_classes * cfg.world_train_per_class
    assert sum(r.split == "test" for r in records) == cfg.world_classes * cfg.world_test_per_class
    for r in records:
        assert r.label in concepts and not Path(r.image).is_absolute()
        img = Image.open(r.image_path(world))
        assert img.size == (cfg.world_image_size,) * 2 and img.mode == "RGB"
        assert set(r.attributes) == set(PARTS) and set(r.visible) <= set(concepts[r.label])
    assert records[0].image == "images/train_0001.png"


def test_ground_truth_consistent(world):
    records, concepts, spec = read_world(world)
    by_name = {c.name: c for c in spec.classes}
    generic_hits = {}
    for r in records:
        cls = by_name[r.label]
        for z in cls.concepts:
            holds = z.text in r.visible
            if z.kind == "nonvisual": assert not holds
            elif r.attributes[z.part] is None: assert not holds, (r.id, z.text)  # hidden part: never visible
            else: assert holds == (r.attributes[z.part] == z.value), (r.id, z.text)
            if z.kind == "generic": generic_hits.setdefault(z.text, []).append(holds)
        for p, v in r.attributes.items():  # a shown value is the class's or one of its variants
            assert v is None or v in VALUES[p]
    assert generic_hits and all(np.mean(h) > 0.75 for h in generic_hits.values())
    # parts are hidden and varied often enough to matter, but most concepts hold
    hidden = np.mean([v is None for r in records for v in r.attributes.values()])
    assert 0.03 < hidden < 0.3
    assert any(r.attributes[p] not in (None, by_name[r.label].values[p]) for r in records for p in PARTS)


def test_hidden_part_is_hidden():
    values = world_spec(0, 16).classes[0].values
    _, seen = render(values, Scene())
    assert all(v is not None for v in seen.values())  # the default scene shows every part
    _, back = render(values, Scene(view="back"))
    assert back["breast"] is None and back["belly"] is None and back["eye"] is None and back["crown"] == values["crown"]
    _, leaf = render(values, Scene(leaf=("breast", 0, 0, .2)))
    assert leaf["breast"] is None and leaf["tail"] == values["tail"]
    _, cropped = render(values, Scene(cx=1.05))  # the front half of the bird is out of the frame
    assert cropped["beak"] is None and cropped["tail"] == values["tail"]


def test_classes_fine_grained():
    for n in (12, 16, 24):
        spec = world_spec(0, n)
        assert len(spec.classes) == n >= 12
        diff = lambda a, b: sum(a.values[p] != b.values[p] for p in PARTS)
        pairs = list(itertools.combinations(spec.classes, 2))
        assert min(diff(a, b) for a, b in pairs) >= 1
        assert max(min(diff(c, o) for o in spec.classes if o is not c) for c in spec.classes) <= 2
        assert np.mean([diff(a, b) for a, b in pairs]) < len(PARTS) / 2
        names = [c.name for c in spec.classes]
        assert len(set(names)) == n and all(2 <= len(x.split()) <= 3 and x.split()[-1][0].isupper() for x in names)
        for c in spec.classes:
            kinds = [z.kind for z in c.concepts]
            assert 6 <= len(c.concepts) <= 12 and kinds.count("generic") == 2 and 1 <= kinds.count("nonvisual") <= 2


def test_validation_names_the_class():
    good = world_spec(0, 12)
    c = good.classes[3]
    bad_specs = [
        WorldSpec(good.classes[:3] + [replace(c, concepts=[])]),
        WorldSpec(good.classes[:3] + [replace(c, name=good.classes[0].name)]),
        WorldSpec(good.classes[:3] + [replace(c, concepts=c.concepts + [Concept("a long neck", None, None)])]),
        WorldSpec(good.classes[:3] + [replace(c, concepts=c.concepts + [Concept("a small body", "body", "small")])]),
    ]
    for spec, name in zip(bad_specs, [c.name, good.classes[0].name, c.name, c.name]):
        with pytest.raises(ValueError, match=name): validate_spec(spec)
    assert WorldSpec.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match="world_classes"): world_spec(0, 1)


def test_vocabulary_for_other_wordings():
    assert set(VALUES) == set(PARTS) == set(VALUE_SPEC)
    assert all(set(VALUE_SPEC[p]) == set(VALUES[p]) for p in PARTS)
    assert all(v in VALUES[p] for p, v in CONCEPT_TEXT)
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = random_values(rng)
        assert all(values[p] in VALUES[p] for p in PARTS) and values["crown"] != values["wing"]
        assert not any(v.startswith("dull") for v in random_values(rng, variants=False).values())
        img, attrs = render(values, Scene(), 48)
        assert img.size == (48, 48) and set(attrs) == set(PARTS)


def test_world_stage_skips_on_rerun(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(world_mod, "build_world", lambda cfg, out: calls.append(out) or build_world(cfg, out))
    cfg = preset("quick", world_train_per_class=1, world_test_per_class=1)
    m1 = world_stage(RunStore(tmp_path, cfg))
    before = _digest(tmp_path / "world")
    m2 = world_stage(RunStore(tmp_path, cfg))
    assert len(calls) == 1 and m2 == m1 and _digest(tmp_path / "world") == before
    assert m1["counts"] == dict(classes=12, train=12, test=12) and m1["outputs"] == ["world"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".world")]  # no temporary debris
    m3 = world_stage(RunStore(tmp_path, cfg.replace(world_test_per_class=2)))
    assert len(calls) == 2 and m3["key"] != m1["key"] and m3["counts"]["test"] == 24
