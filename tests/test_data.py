"""Tests of selfsynth.data (manifest, concept files, the six loaders on fixture trees, CUB attributes), selfsynth.llm
(the client, LLM concepts) and selfsynth.datacheck (the check, the concept file command)."""
import http.server, json, socket, threading
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from selfsynth.config import preset
from selfsynth.store import RunStore, write_json
from selfsynth.data import (
    Record, write_manifest, read_manifest, read_concepts, write_concepts, check_labels, LOADERS, LayoutError, find_root,
    write_fixture, load_cub, load_dogs, load_aircraft, load_ham10000, load_chest_xray, load_pld, cub_attribute_phrase,
    cub_concepts, cub_image_attributes, load_dataset, data_stage, ham_split, stratified_subsample, read_pairs, dogs_label,
    pld_label, cub_label)
from selfsynth.llm import LLMEndpoint, LLMError, chat, generate_concepts, concept_messages, parse_bullets
from selfsynth.datacheck import check_dataset, data_check_main, data_concepts_main, verify_image

# ---------------------------------------------------------------- manifest and concept files

def test_manifest_roundtrip_and_errors(tmp_path):
    recs = [Record("a", "img/a.png", "Red Finch", "train", visible=["red crown"], attributes={"present": ["x"]}),
            Record("b", "/abs/b.png", "Blue Jay", "test")]
    p = write_manifest(recs, tmp_path / "m.jsonl")
    assert read_manifest(p) == recs and read_manifest(p, "test") == recs[1:]
    assert recs[0].image_path(tmp_path) == tmp_path / "img/a.png" and recs[1].image_path(tmp_path) == Path("/abs/b.png")
    with pytest.raises(ValueError, match="duplicate id 'a'"): write_manifest(recs + [recs[0]], tmp_path / "d.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "image": "x", "label": "L", "split": "val"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'split'"): read_manifest(tmp_path / "bad.jsonl")

def test_concept_files_both_shapes(tmp_path):
    write_json(tmp_path / "pub.json", {"1": {"name": "Red Finch", "visual_features": [" red crown ", "short beak"]}})
    write_concepts({"Red Finch": ["red crown", "short beak"]}, tmp_path / "ours.json")
    assert read_concepts(tmp_path / "pub.json") == read_concepts(tmp_path / "ours.json") == {"Red Finch": ["red crown", "short beak"]}
    write_json(tmp_path / "empty.json", {"Red Finch": []})
    with pytest.raises(ValueError, match="empty.json: class 'Red Finch'"): read_concepts(tmp_path / "empty.json")
    with pytest.raises(ValueError, match="no concepts for label 'Blue Jay'"):
        check_labels([Record("b", "b.png", "Blue Jay", "test")], {"Red Finch": ["red crown"]}, "c.json")

# ---------------------------------------------------------------- every loader reads its fixture

EXPECT = {  # dataset -> (labels the fixture's 3 classes must get, train, test)
    "cub-200": ({"Black footed Albatross", "Laysan Albatross", "Sooty Albatross"}, 6, 6),
    "stanford-dogs": ({"Chihuahua", "Japanese spaniel", "Shih-Tzu"}, 6, 6),
    "fgvc-aircraft": ({"707-320", "F/A-18", "Cessna 172"}, 6, 6),
    "ham10000": ({"actinic keratosis", "basal cell carcinoma", "benign keratosis"}, 6, 6),
    "chest-xray": ({"normal", "pneumonia"}, 4, 4),
    "pld": ({"Tomato Early blight", "Apple Apple scab", "Corn (maize) Cercospora leaf spot Gray leaf spot"}, 6, 6),
}

@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_reads_its_layout(tmp_path, name):
    root = write_fixture(name, tmp_path / name, seed=1)
    recs = LOADERS[name](root, preset(name, data_root=str(root)))
    labels, n_train, n_test = EXPECT[name]
    assert {r.label for r in recs} == labels
    assert Counter(r.split for r in recs) == {"train": n_train, "test": n_test}
    assert len({r.id for r in recs}) == len(recs)
    for r in recs:
        assert Path(r.image).is_absolute() and Path(r.image).is_file()
        with Image.open(r.image) as im: im.load()
    rep = check_dataset(name, root)
    assert rep.ok, rep.summary()
    assert sum(rep.counts["train"].values()) == n_train and set(rep.counts["test"]) == labels

@pytest.mark.parametrize("name", sorted(LOADERS))
def test_wrong_layout_names_the_expected_files(tmp_path, name):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(LayoutError) as e: LOADERS[name](tmp_path / "empty", preset(name))
    marker = {"cub-200": "images.txt", "stanford-dogs": "Images", "fgvc-aircraft": "images_variant_trainval.txt",
              "ham10000": "HAM10000_metadata.csv", "chest-xray": "train/NORMAL", "pld": "valid"}[name]
    assert marker in str(e.value) and str(tmp_path / "empty") in str(e.value)

def test_partial_layout_names_the_missing_file(tmp_path, monkeypatch):
    write_fixture("cub-200", tmp_path / "cub")
    (tmp_path / "cub" / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(LayoutError, match=r"CUB_200_2011 lacks train_test_split.txt"): load_cub(tmp_path / "cub")
    write_fixture("chest-xray", tmp_path / "cx")
    monkeypatch.chdir(tmp_path)  # a relative data root still gives absolute image paths
    assert all(Path(r.image).is_absolute() for r in load_chest_xray("cx"))

def test_find_root_prefers_shallowest_copy_and_skips_macosx(tmp_path):
    for d in ("__MACOSX/chest_xray/train/NORMAL", "a/chest_xray/chest_xray/train/NORMAL", "a/chest_xray/train/NORMAL"):
        (tmp_path / d).mkdir(parents=True)
    assert find_root(tmp_path, "chest-xray", ["train/NORMAL"]) == tmp_path / "a/chest_xray"
    with pytest.raises(LayoutError, match="searched 1 levels"): find_root(tmp_path, "chest-xray", ["train/NORMAL"], depth=1)

def test_readable_labels():
    assert cub_label("001.Black_footed_Albatross") == "Black footed Albatross"
    assert cub_label("200.Common_Yellowthroat") == "Common Yellowthroat"
    assert dogs_label("n02085620-Chihuahua") == "Chihuahua" and dogs_label("n02086240-Shih-Tzu") == "Shih-Tzu"
    assert dogs_label("n02099267-flat-coated_retriever") == "flat-coated retriever"
    assert pld_label("Tomato___Early_blight") == "Tomato Early blight"
    assert pld_label("Pepper,_bell___Bacterial_spot") == "Pepper, bell Bacterial spot"

# ---------------------------------------------------------------- dataset specifics

def test_dogs_lists_are_real_matlab_cells(tmp_path):
    root = write_fixture("stanford-dogs", tmp_path, n_classes=2, n_train=1, n_test=1)
    m = loadmat(tmp_path / "lists" / "train_list.mat")
    assert m["file_list"].shape == (2, 1) and m["file_list"].dtype == object and m["labels"].shape == (2, 1)
    assert str(m["file_list"][0, 0][0]) == "n02085620-Chihuahua/n02085620_1000.jpg"
    recs = load_dogs(root)
    assert [(r.id, r.split) for r in recs][:2] == [("n02085620-Chihuahua/n02085620_1000", "train"),
                                                  ("n02085782-Japanese_spaniel/n02085782_1000", "train")]
    # the .mat files beside Images/ (lists.tar unpacked in place) are found too
    for f in (tmp_path / "lists").iterdir(): f.rename(tmp_path / f.name)
    (tmp_path / "lists").rmdir()
    assert load_dogs(root) == recs
    (tmp_path / "test_list.mat").unlink()
    with pytest.raises(LayoutError, match="test_list.mat"): load_dogs(root)

def test_dogs_mat_without_file_list_is_named(tmp_path):
    from scipy.io import savemat
    root = write_fixture("stanford-dogs", tmp_path, n_classes=1, n_train=1, n_test=1)
    savemat(tmp_path / "lists" / "train_list.mat", {"labels": np.ones((1, 1))})
    with pytest.raises(LayoutError, match=r"train_list.mat: no field 'file_list'"): load_dogs(root)

def test_aircraft_slash_label_and_unknown_variant(tmp_path):
    root = write_fixture("fgvc-aircraft", tmp_path)
    recs = load_aircraft(root)
    fa = [r for r in recs if r.label == "F/A-18"]
    assert fa and all(Path(r.image).parent.name == "images" and Path(r.image).name == f"{r.id}.jpg" for r in fa)
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    with open(data / "images_variant_test.txt", "a") as f: f.write("0000001 Boeing 999\n")
    with pytest.raises(LayoutError, match=r"images_variant_test.txt: image 0000001: variant 'Boeing 999'"): load_aircraft(root)

def test_ham_split_is_stratified_seeded_and_has_the_papers_sizes():
    sizes = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}  # the real counts
    labels = [dx for dx, n in sizes.items() for _ in range(n)]
    split = ham_split(labels, seed=0)
    assert Counter(split) == {"train": 5007, "test": 5008}  # the paper's Table 8
    for dx, n in sizes.items():
        k = sum(1 for l, s in zip(labels, split) if l == dx and s == "train")
        assert abs(k - n / 2) <= 0.5
    assert ham_split(labels, seed=0) == split and ham_split(labels, seed=1) != split

def test_ham_reads_metadata_and_both_parts(tmp_path):
    root = write_fixture("ham10000", tmp_path, n_classes=7, n_train=1, n_test=1)
    recs = load_ham10000(root, preset("ham10000", world_seed=3))
    assert {Path(r.image).parent.name for r in recs} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert {r.label for r in recs} == {"actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
                                       "melanoma", "melanocytic nevus", "vascular lesion"}
    assert all(Counter(r.split for r in recs if r.label == l) == {"train": 1, "test": 1} for l in {r.label for r in recs})
    meta = tmp_path / "HAM10000_metadata.csv"
    meta.write_text(meta.read_text().replace(",nv,", ",xyz,"))
    with pytest.raises(LayoutError, match=r"HAM10000_metadata.csv:\d+: field 'dx' is 'xyz'"): load_ham10000(root)

def test_chest_xray_drops_val(tmp_path):
    root = write_fixture("chest-xray", tmp_path, n_train=2, n_test=1)
    recs = load_chest_xray(root)
    assert not any("/val/" in r.image for r in recs) and (tmp_path / "chest_xray" / "val" / "NORMAL").is_dir()
    assert Counter((r.split, r.label) for r in recs) == {("train", "normal"): 2, ("train", "pneumonia"): 2,
                                                         ("test", "normal"): 1, ("test", "pneumonia"): 1}

def test_pld_subsample_is_stratified_and_seeded(tmp_path):
    root = write_fixture("pld", tmp_path, n_classes=3, n_train=10, n_test=2)
    full = load_pld(root, preset("pld", pld_train_size=None))
    assert Counter(r.split for r in full) == {"train": 30, "test": 6}
    sub = load_pld(root, preset("pld", pld_train_size=12, world_seed=0))
    train = [r for r in sub if r.split == "train"]
    assert len(train) == 12 and set(Counter(r.label for r in train).values()) == {4}
    assert [r for r in sub if r.split == "test"] == [r for r in full if r.split == "test"]
    assert load_pld(root, preset("pld", pld_train_size=12, world_seed=0, seed=5)) == sub  # the training seed keeps the split
    assert load_pld(root, preset("pld", pld_train_size=12, world_seed=1)) != sub

def test_stratified_subsample_largest_remainder():
    recs = [Record(str(i), f"{i}.jpg", "a" if i < 7 else "b", "train") for i in range(10)]
    got = stratified_subsample(recs, 5, seed=0)
    assert Counter(r.label for r in got) == {"a": 4, "b": 1} and got == sorted(got, key=lambda r: int(r.id))
    assert stratified_subsample(recs, 50) == recs

# ---------------------------------------------------------------- CUB attributes

def _real_cub_attribute_names():
    "The 312 names of CUB's attributes.txt, rebuilt from its 28 groups."
    colors = "blue brown iridescent purple rufous grey yellow olive green pink orange black white red buff".split()
    patterns = "solid spotted striped multi-colored".split()
    groups = [("bill_shape", "curved_(up_or_down) dagger hooked needle hooked_seabird spatulate all-purpose cone specialized".split()),
              ("wing_color", colors), ("upperparts_color", colors), ("underparts_color", colors), ("breast_pattern", patterns),
              ("back_color", colors), ("tail_shape", "forked_tail rounded_tail notched_tail fan-shaped_tail pointed_tail squared_tail".split()),
              ("upper_tail_color", colors),
              ("head_pattern", "spotted malar crested masked unique_pattern eyebrow eyering plain eyeline striped capped".split()),
              ("breast_color", colors), ("throat_color", colors), ("eye_color", [c for c in colors if c != "iridescent"]),
              ("bill_length", "about_the_same_as_head longer_than_head shorter_than_head".split()),
              ("forehead_color", colors), ("under_tail_color", colors), ("nape_color", colors), ("belly_color", colors),
              ("wing_shape", "rounded-wings pointed-wings broad-wings tapered-wings long-wings".split()),
              ("size", "large_(16_-_32_in) small_(5_-_9_in) very_large_(32_-_72_in) medium_(9_-_16_in) very_small_(3_-_5_in)".split()),
              ("shape", ("upright-perching_water-like chicken-like-marsh long-legged-like duck-like owl-like gull-like hummingbird-like "
                         "pigeon-like tree-clinging-like hawk-like sandpiper-like upland-ground-like swallow-like perching-like").split()),
              ("back_pattern", patterns), ("tail_pattern", patterns), ("belly_pattern", patterns), ("primary_color", colors),
              ("leg_color", colors), ("bill_color", colors), ("crown_color", colors), ("wing_pattern", patterns)]
    return [f"has_{g}::{v}" for g, vs in groups for v in vs]

def test_cub_attribute_phrases_are_readable_and_distinct():
    names = _real_cub_attribute_names()
    assert len(names) == 312
    phrases = [cub_attribute_phrase(n) for n in names]
    assert len(set(phrases)) == 312
    assert all("_" not in p and "::" not in p and p == p.strip() for p in phrases)
    examples = {"has_bill_shape::dagger": "dagger-shaped bill", "has_wing_color::blue": "blue wing",
                "has_tail_shape::forked_tail": "forked tail", "has_wing_shape::long-wings": "long wings",
                "has_size::very_large_(32_-_72_in)": "very large size (32-72 in)", "has_head_pattern::malar": "malar stripe",
                "has_under_tail_color::white": "white under tail", "has_breast_pattern::spotted": "spotted breast",
                "has_bill_length::shorter_than_head": "bill shorter than the head", "has_shape::owl-like": "owl-like body shape"}
    assert {n: cub_attribute_phrase(n) for n in examples} == examples
    with pytest.raises(ValueError, match="not a CUB attribute"): cub_attribute_phrase("bill dagger")

def _write_cub_attrs(root, matrix, image_rows):
    "Overwrite the fixture's class-attribute matrix and image labels with known values."
    attrs = root / "CUB_200_2011" / "attributes"
    (attrs / "class_attribute_labels_continuous.txt").write_text("\n".join(" ".join(map(str, r)) for r in matrix) + "\n")
    (attrs / "image_attribute_labels.txt").write_text("\n".join(" ".join(map(str, r)) for r in image_rows) + "\n")

def test_cub_concepts_threshold_and_ground_truth_certainty(tmp_path):
    root = write_fixture("cub-200", tmp_path, n_classes=2, n_train=1, n_test=1)
    (tmp_path / "attributes.txt").write_text("1 has_bill_shape::dagger\n2 has_wing_color::blue\n3 has_breast_pattern::spotted\n"
                                             "4 has_size::small_(5_-_9_in)\n")
    _write_cub_attrs(tmp_path, [[90, 49.9, 50, 75], [10, 0, 20, 5]],
                     [(1, 1, 1, 4, 1.0), (1, 2, 1, 2, 1.0), (1, 3, 1, 3, 1.0), (1, 4, 0, 4, 1.0, 0),
                      (3, 2, 1, 4, 2.0)])  # image 1: dagger (definitely), blue (guessing), spotted (probably)
    cons = cub_concepts(tmp_path)
    assert cons["Black footed Albatross"] == ["dagger-shaped bill", "small size (5-9 in)", "spotted breast"]  # >= 50, by share
    assert cons["Laysan Albatross"] == ["spotted breast", "dagger-shaped bill", "small size (5-9 in)"]  # topped up to 3
    assert cub_image_attributes(tmp_path / "CUB_200_2011") == {"1": ["dagger-shaped bill", "spotted breast"], "3": ["blue wing"]}
    assert cub_image_attributes(tmp_path / "CUB_200_2011", min_certainty=2)["1"] == ["dagger-shaped bill", "blue wing", "spotted breast"]
    recs, concepts = load_dataset(preset("cub-200", data_root=str(tmp_path)))
    assert concepts == cons
    by = {r.id: r for r in recs}
    assert by["1"].visible == ["dagger-shaped bill", "spotted breast"]  # present and in the class's list
    assert by["3"].visible == [] and by["3"].attributes == {"present": ["blue wing"]}  # blue wing: not a Laysan concept
    _write_cub_attrs(tmp_path, [[90, 50, 50, 75]], [])
    with pytest.raises(LayoutError, match="1 rows, but classes.txt has 2"): cub_concepts(tmp_path)

def test_cub_attribute_files_beside_or_inside(tmp_path):
    root = write_fixture("cub-200", tmp_path)
    beside = load_cub(root)
    assert all(r.attributes is not None for r in beside) and (tmp_path / "attributes.txt").is_file()
    (tmp_path / "attributes.txt").rename(tmp_path / "CUB_200_2011" / "attributes" / "attributes.txt")
    assert load_cub(root) == beside and load_cub(tmp_path / "CUB_200_2011") == beside
    (tmp_path / "CUB_200_2011" / "attributes" / "attributes.txt").unlink()
    assert all(r.attributes is None for r in load_cub(root))  # no attribute names: records without ground truth
    with pytest.raises(LayoutError, match="attributes.txt not found"): cub_concepts(root)

def test_cub_malformed_list_line_is_named(tmp_path):
    root = write_fixture("cub-200", tmp_path)
    with open(tmp_path / "CUB_200_2011" / "images.txt", "a") as f: f.write("oops\n")
    with pytest.raises(LayoutError, match=r"images.txt:13: expected '<id> <value>'"): load_cub(root)

# ---------------------------------------------------------------- load_dataset and the data stage

def test_load_dataset_with_a_concept_file(tmp_path):
    root = write_fixture("stanford-dogs", tmp_path / "dogs")
    cfg = preset("stanford-dogs", data_root=str(root))
    with pytest.raises(ValueError, match="needs a concept file"): load_dataset(cfg)
    cons = {l: [f"{l} ears"] for l in ("Shih-Tzu", "Chihuahua", "Japanese spaniel", "Beagle")}
    write_json(tmp_path / "c.json", cons)
    recs, concepts = load_dataset(cfg.replace(concepts=str(tmp_path / "c.json")))
    assert list(concepts) == ["Chihuahua", "Japanese spaniel", "Shih-Tzu"]  # dataset labels only, in dataset order
    assert all(r.visible is None for r in recs)
    write_json(tmp_path / "c2.json", {"Chihuahua": ["big eyes"]})
    with pytest.raises(ValueError, match="c2.json: no concepts for label 'Japanese spaniel'"):
        load_dataset(cfg.replace(concepts=str(tmp_path / "c2.json")))
    with pytest.raises(ValueError, match="needs data_root"): load_dataset(preset("pld"))

def test_load_dataset_refuses_missing_images(tmp_path):
    root = write_fixture("chest-xray", tmp_path / "cx")
    write_json(tmp_path / "c.json", {"normal": ["clear lungs"], "pneumonia": ["opacity"]})
    cfg = preset("chest-xray", data_root=str(root), concepts=str(tmp_path / "c.json"))
    assert len(load_dataset(cfg)[0]) == 8
    write_fixture("ham10000", tmp_path / "ham")
    next((tmp_path / "ham" / "HAM10000_images_part_1").iterdir()).unlink()
    write_json(tmp_path / "h.json", {l: ["x"] for l in EXPECT["ham10000"][0]})
    with pytest.raises(FileNotFoundError, match="1 image.s. missing"):
        load_dataset(preset("ham10000", data_root=str(tmp_path / "ham"), concepts=str(tmp_path / "h.json")))

def test_data_stage_writes_manifest_and_concepts_once(tmp_path):
    root = write_fixture("cub-200", tmp_path / "cub")
    cfg = preset("cub-200", data_root=str(root), run_dir=str(tmp_path / "run"))
    m = data_stage(RunStore(cfg.run_dir, cfg))
    recs = read_manifest(tmp_path / "run" / "data" / "manifest.jsonl")
    assert m["counts"] == {"train": 6, "test": 6, "classes": 3} and len(recs) == 12
    assert all(r.visible is not None and set(r.visible) <= set(r.attributes["present"]) for r in recs)
    assert read_concepts(tmp_path / "run" / "data" / "concepts.json") == cub_concepts(root)
    assert data_stage(RunStore(cfg.run_dir, cfg))["finished"] == m["finished"]  # up to date: not rerun

# ---------------------------------------------------------------- the check

def test_check_reports_corrupt_missing_duplicate_and_unknown_label(tmp_path, capsys):
    root = write_fixture("cub-200", tmp_path)
    cub = tmp_path / "CUB_200_2011"
    imgs = read_pairs(cub / "images.txt")
    (cub / "images" / imgs[0][1]).write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cub / "images" / imgs[3][1])
    good = (cub / "images" / imgs[3][1]).read_bytes()
    (cub / "images" / imgs[3][1]).write_bytes(good[:-100])  # truncated scan data: passes verify(), fails load()
    (cub / "images" / imgs[1][1]).unlink()
    with open(cub / "images.txt", "a") as f: f.write(f"{imgs[2][0]} {imgs[2][1]}\n")
    write_concepts({"Black footed Albatross": ["a"], "Laysan Albatross": ["b"], "Elsewhere Bird": ["c"]}, tmp_path / "c.json")
    rep = check_dataset("cub-200", root, tmp_path / "c.json")
    assert not rep.ok
    text = "\n".join(rep.problems)
    assert f"corrupt image {cub / 'images' / imgs[0][1]} (id 1)" in text
    assert f"corrupt image {cub / 'images' / imgs[3][1]} (id 4)" in text
    assert f"missing image {cub / 'images' / imgs[1][1]} (id 2)" in text
    assert "duplicate id '3' (2 records)" in text
    assert "label 'Sooty Albatross' (4 images) has no concepts" in text
    assert len(rep.problems) == 5 and any("Elsewhere Bird" in n for n in rep.notes)
    assert data_check_main("cub-200", str(root), str(tmp_path / "c.json")) == 1
    out = capsys.readouterr().out
    assert "5 PROBLEM(S)" in out and "problems (first 5 of 5)" in out and "Black footed Albatross" in out

def test_check_lists_first_ten_problems_and_the_total(tmp_path):
    root = write_fixture("pld", tmp_path, n_classes=2, n_train=6, n_test=1)
    for p in sorted(tmp_path.rglob("*.JPG"))[:12]: p.write_bytes(b"junk")
    rep = check_dataset("pld", root)
    assert len(rep.problems) == 12 and sum(rep.counts["train"].values()) == 12
    assert len(check_dataset("pld", root, cfg=preset("pld", pld_train_size=4)).problems) < 12  # a run's subsample only
    s = rep.summary()
    assert "problems (first 10 of 12)" in s and sum(l.startswith("  corrupt image") for l in s.splitlines()) == 10

def test_check_ok_exit_zero_and_layout_problem(tmp_path, capsys):
    root = write_fixture("fgvc-aircraft", tmp_path / "air")
    assert data_check_main("fgvc-aircraft", str(root)) == 0
    assert "OK" in capsys.readouterr().out
    assert data_check_main("fgvc-aircraft", str(tmp_path / "nowhere")) == 1
    assert "is not a folder" in capsys.readouterr().out
    rep = check_dataset("ham10000", tmp_path / "air")
    assert not rep.ok and "HAM10000_metadata.csv" in rep.problems[0]
    assert not check_dataset("imagenet", tmp_path).ok

def test_verify_image(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n")
    assert verify_image(tmp_path / "a.png") is None
    assert verify_image(tmp_path / "b.png").startswith("corrupt") and verify_image(tmp_path / "c.png") == "missing"

# ---------------------------------------------------------------- concepts from an LLM

def test_parse_bullets_survives_numbering_markdown_and_headings():
    reply = """## Distinctive features
Here are the features you asked for:

1. **Bright red crown**
2) Black *wing* bars.
(3) short, conical bill;

- Plumage:
  - white belly
* streaked flanks
• yellow legs
+ __long tail__
#### Notes
Females are duller."""
    assert parse_bullets(reply) == ["Bright red crown", "Black wing bars", "short, conical bill", "white belly",
                                    "streaked flanks", "yellow legs", "long tail"]
    assert parse_bullets("red crown\n\n**Colours**\nblack wings\nred crown") == ["red crown", "black wings"]  # no markers
    assert parse_bullets("- 10 cm long\n- snake_case_name\n1. a\n1. A") == ["10 cm long", "snake_case_name", "a"]
    assert parse_bullets("") == []

class ChatServer:
    "A real chat-completions server on 127.0.0.1 that answers `replies` [(status, body)] in order, then stops."
    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        outer = self
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append((self.path, dict(self.headers), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                status, body = outer.replies[len(outer.requests) - 1]
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status); self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
            def log_message(self, *a): pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.server.timeout = 5  # handle_request gives up after 5 s without a request: the thread always ends
        self.thread = threading.Thread(target=lambda: [self.server.handle_request() for _ in self.replies], daemon=True)
    def endpoint(self, **kw): return LLMEndpoint(f"http://127.0.0.1:{self.server.server_port}/v1", "test-model", **kw)
    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a): self.thread.join(10); self.server.server_close()

def completion(text): return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}

def test_chat_sends_the_protocol_and_reads_the_reply():
    with ChatServer([(200, completion("hello"))]) as s:
        assert chat(s.endpoint(api_key="sk-test"), [{"role": "user", "content": "hi"}]) == "hello"
    path, headers, body = s.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "test-model" and body["messages"] == [{"role": "user", "content": "hi"}]

def test_generate_concepts_caches_per_class(tmp_path):
    replies = [(200, completion("1. red crown\n2. black wings\n3. short bill")), (200, completion("- swept wings\n- twin tails\n- grey body"))]
    with ChatServer(replies) as s:
        got = generate_concepts(["Red Finch", "F/A-18"], s.endpoint(), cache_dir=tmp_path, domain="thing")
    assert got == {"Red Finch": ["red crown", "black wings", "short bill"], "F/A-18": ["swept wings", "twin tails", "grey body"]}
    assert "F/A-18" in s.requests[1][2]["messages"][1]["content"] and len(list(tmp_path.glob("*.json"))) == 2
    # a second run asks nothing: this endpoint is down
    down = LLMEndpoint(s.endpoint().base_url, "test-model", retries=0)
    assert generate_concepts(["Red Finch", "F/A-18"], down, cache_dir=tmp_path, domain="thing") == got
    cached = json.loads(next(tmp_path.glob("red_finch-*.json")).read_text())
    assert cached["reply"].startswith("1. red crown") and cached["model"] == "test-model"
    with pytest.raises(LLMError, match="127.0.0.1"):  # another model: not the same cache entry
        generate_concepts(["Red Finch"], LLMEndpoint(down.base_url, "other-model", retries=0), cache_dir=tmp_path)

def test_retry_after_server_error():
    with ChatServer([(500, "overloaded"), (503, "busy"), (200, completion("- a\n- b\n- c"))]) as s:
        assert generate_concepts(["X"], s.endpoint(backoff=0.01))["X"] == ["a", "b", "c"]
    assert len(s.requests) == 3

def test_malformed_body_is_retried_and_refusal_is_not():
    with ChatServer([(200, "<html>gateway</html>"), (200, {"choices": []}), (200, completion("ok")),
                     (200, "<html>gateway</html>"), (401, {"error": "bad key"})]) as s:
        ep = s.endpoint(backoff=0.01)
        assert chat(ep, []) == "ok"  # two malformed bodies, then a good one
        with pytest.raises(LLMError, match=rf"LLM endpoint {ep.url} failed for class 'X' after 1 attempt .*"
                                           r"last: malformed chat-completions JSON"):
            chat(s.endpoint(retries=0), [], item="class 'X'")
        with pytest.raises(LLMError, match=r"refused the request \(HTTP 401"): chat(ep, [])
    assert len(s.requests) == 5  # a 401 is not retried

def test_down_endpoint_is_retried_then_named():
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    ep = LLMEndpoint(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff=0.01)
    with pytest.raises(LLMError, match=rf"LLM endpoint http://127.0.0.1:{port}/v1/chat/completions failed after 3 attempts"):
        chat(ep, [])

def test_too_few_bullets_is_an_error_naming_class_and_endpoint():
    with ChatServer([(200, completion("I cannot help with that."))]) as s:
        with pytest.raises(LLMError, match=r"reply for class 'X' has 1 bullet"): generate_concepts(["X"], s.endpoint())

def test_endpoint_from_env(monkeypatch):
    for v in ("SELFSYNTH_LLM_BASE_URL", "SELFSYNTH_LLM_MODEL", "SELFSYNTH_LLM_API_KEY"): monkeypatch.delenv(v, raising=False)
    with pytest.raises(LLMError, match="SELFSYNTH_LLM_BASE_URL and SELFSYNTH_LLM_MODEL"): LLMEndpoint.from_env()
    monkeypatch.setenv("SELFSYNTH_LLM_BASE_URL", "http://h/v1/"); monkeypatch.setenv("SELFSYNTH_LLM_MODEL", "gpt-4o")
    ep = LLMEndpoint.from_env(retries=1)
    assert (ep.url, ep.model, ep.api_key, ep.retries) == ("http://h/v1/chat/completions", "gpt-4o", None, 1)

def test_concept_prompt_asks_for_visible_features_as_bullets():
    m = concept_messages("Painted Bunting", "bird species")
    assert "Painted Bunting" in m[1]["content"] and "bird species" in m[1]["content"] and "bullet" in m[0]["content"]

def test_data_concepts_main(tmp_path, monkeypatch, capsys):
    root = write_fixture("chest-xray", tmp_path / "cx")
    with ChatServer([(200, completion("- clear lungs\n- sharp diaphragm\n- no opacity")),
                     (200, completion("- patchy opacity\n- consolidation\n- air bronchograms"))]) as s:
        monkeypatch.setenv("SELFSYNTH_LLM_BASE_URL", s.endpoint().base_url); monkeypatch.setenv("SELFSYNTH_LLM_MODEL", "m")
        assert data_concepts_main("chest-xray", root, tmp_path / "c.json") == 0
    assert read_concepts(tmp_path / "c.json")["pneumonia"] == ["patchy opacity", "consolidation", "air bronchograms"]
    assert "chest X-ray finding" in s.requests[0][2]["messages"][1]["content"]
    cub = write_fixture("cub-200", tmp_path / "cub")
    assert data_concepts_main("cub-200", cub, tmp_path / "cub.json", source="attributes") == 0
    assert read_concepts(tmp_path / "cub.json") == cub_concepts(cub)
    assert data_concepts_main("pld", tmp_path, tmp_path / "p.json", source="attributes") == 1
    assert "cub-200 only" in capsys.readouterr().err

def test_the_command_line_writes_a_concept_file(tmp_path, capsys):
    "`selfsynth data concepts`, which the docs and the loader's error message point users to, exists and writes the file."
    from selfsynth.cli import main
    cub = write_fixture("cub-200", tmp_path / "cub")
    assert main(["data", "concepts", "--dataset", "cub-200", "--data-root", str(cub), "--source", "attributes",
                 "--out", str(tmp_path / "cub.json")]) == 0
    assert read_concepts(tmp_path / "cub.json") == cub_concepts(cub)
    assert main(["data", "concepts", "--dataset", "cub-200", "--data-root", str(cub)]) == 2  # no --out: a one-line error
    assert "--out" in capsys.readouterr().err
