"Tests of the method registry (00a_methods): a method added as one entry runs rounds; `ours_<selector>` reads its own selection."
import pytest
from selfsynth.store import RunStore, read_jsonl
from selfsynth.methods import REGISTRY, Method, register
from selfsynth.layout import SELECTED, round_dir, selection_path
from selfsynth.rounds import run_round, round_stage_names

@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_run_config):
    cfg = tiny_run_config(tmp_path_factory.mktemp("m"), describe_samples=3, rs_queries=2, rounds=2)
    return RunStore(cfg.run_dir, cfg)

@pytest.fixture
def lge_unchecked():
    "A method that exists only as a registry entry: L+GE's concepts, its rewrites and candidates kept unchecked."
    m = register(Method("lge_unchecked", "L+GE, unchecked", "class", check=False, chooser="random", paper=False))
    yield m
    del REGISTRY[m.name]

def test_a_registered_method_runs_two_rounds(store, lge_unchecked):
    s = run_round(store, "lge_unchecked", 2)
    assert list(s["stages"]) == round_stage_names("lge_unchecked", 2) == ["rejection/lge_unchecked/round-2", "tune/lge_unchecked/round-2"]
    r1 = read_jsonl(store.path(f"{round_dir('lge_unchecked', 1)}/qa.jsonl"))
    assert round_dir("lge_unchecked", 1) == "baselines/lge_unchecked/round-1"
    assert r1 and {r["source"] for r in r1} == {"raw"}  # check=False: the rewrites as generated, no fallback
    r2 = read_jsonl(store.path(f"{round_dir('lge_unchecked', 2)}/qa.jsonl"))
    assert r2 and {r["source"] for r in r2} == {"random"}  # chooser random: one candidate, unchecked
    assert (store.path(round_dir("lge_unchecked", 2)) / "merged/config.json").exists()

def test_the_entry_decides_not_the_name(store, lge_unchecked):
    "The same name with check=True: the rewrites are checked (kept or the fallback), as L+GE's are."
    from selfsynth.synthesize import finish_image, label_finder
    sel = dict(id="train_0001", label="Red Finch", selected=["a red crown"])
    plans = [dict(kind="explain", question="Q?", prompt="P")]
    raw = finish_image(sel, "x.png", plans, ["It is a sparrow."], "lge_unchecked", "mini", 90, 0, label_finder(["Red Finch"]))
    assert raw[0]["source"] == "raw" and raw[0]["answer"] == "It is a sparrow."
    REGISTRY["lge_unchecked"] = Method("lge_unchecked", "x", "class", paper=False)
    checked = finish_image(sel, "x.png", plans, ["It is a sparrow."], "lge_unchecked", "mini", 90, 0, label_finder(["Red Finch"]))
    assert checked[0]["source"] == "fallback"

def test_ours_cosine_reads_its_own_selection_at_infonce_sizes(store):
    run_round(store, "ours_cosine", 1)
    assert round_stage_names("ours_cosine", 1) == ["describe", "embed", "select", "select/cosine", "synthesize/ours_cosine", "tune/ours_cosine/round-1"]
    paper = {r["id"]: r for r in read_jsonl(store.path(SELECTED))}
    own = {r["id"]: r for r in read_jsonl(store.path(selection_path("ours_cosine")))}
    assert set(own) == set(paper) and all(len(own[i]["selected"]) == len(paper[i]["selected"]) for i in paper)
    assert all(r["selector"] == "cosine" and set(r["selected"]) <= set(r["scores"]) for r in own.values())
    # the rewrite prompts name the cosine selection's concepts, not InfoNCE's
    from selfsynth.synthesize import plan_image
    from selfsynth.data import read_concepts
    from selfsynth.describe import dataset_files
    concepts = read_concepts(store.path(dataset_files(store.cfg)[1]))
    i = next(i for i in own if own[i]["selected"] != paper[i]["selected"]) if any(own[i]["selected"] != paper[i]["selected"] for i in own) else next(iter(own))
    plan = plan_image(own[i], concepts[own[i]["label"]], "ours_cosine", "mini", 1, 0.0, 0)[0]
    assert all(z in plan["prompt"] for z in own[i]["selected"])

def test_unknown_methods_are_named(store):
    with pytest.raises(ValueError, match="unknown method 'ours_bm25'.*known: ours, nl, lge"): run_round(store, "ours_bm25", 1)
    from selfsynth.config import ConfigError
    with pytest.raises(ConfigError, match="'methods': unknown"): store.cfg.replace(methods=("ours", "bm25"))

def test_the_study_chooses_the_selector_on_half_the_images(store):
    from selfsynth.report import CHOICE, chosen_method, selector_choice_stage
    from selfsynth.store import read_json
    m = chosen_method(store)
    c = read_json(store.path(CHOICE))
    assert c["metric"] == "precision_specific" and set(c["choice_half"]) == {"infonce", "infonce_image", "infonce_other_class", "cosine"}
    best = max(v for v in c["choice_half"].values() if v is not None)
    assert c["choice_half"][c["chosen"]] == best  # the best on the choosing half; reported on the other
    assert m == (None if c["chosen"] == "infonce" else f"ours_{c['chosen']}") and (m is None or m in REGISTRY)
    assert sum(c["images"]) == store.manifest("select")["counts"]["images"]
    assert selector_choice_stage(store)["counts"]["chosen"] == c["chosen"]  # a finished stage: read back, not redone
    from selfsynth.report import choice_note
    note = choice_note(c)
    assert f"**{c['chosen']}**" in note and (("no other was trained" in note) == (m is None))
    assert "is in Table 1" in choice_note(dict(c, chosen="cosine", method="ours_cosine"))

def test_no_ground_truth_no_choice(store, monkeypatch):
    "A data set without per-image ground truth cannot choose: a clear error naming the config key."
    import selfsynth.report as report
    monkeypatch.setattr(report, "visible_map", lambda s, split="train": {"x": None})
    with pytest.raises(ValueError, match="'selector_method'.*no per-image ground truth"): report.selector_choice_stage(store)

def test_reproduce_queues_the_chosen_method(store, monkeypatch, tmp_path):
    "With selector_method, `reproduce` of a new run folder adds the study's `ours_<selector>` to its queues (the notebooks themselves are not run here)."
    import selfsynth.cli as cli
    from selfsynth.report import chosen_method
    seen = []
    monkeypatch.setattr(cli, "run_jobs", lambda s, queues, lanes, after=None: seen.append(list(queues)))
    monkeypatch.setattr(cli, "execute", lambda *a, **kw: None)
    on = RunStore(tmp_path / "run", store.cfg.replace(selector_method=True, run_dir=str(tmp_path / "run")))
    cli.reproduce(on, jobs=1)
    m = chosen_method(on)
    assert seen == [["base", *store.cfg.methods, *([m] if m else []), "study", "theory"]]
    cli.reproduce(RunStore(tmp_path / "off", store.cfg.replace(run_dir=str(tmp_path / "off"))), jobs=1)  # the default: the paper's methods only
    assert seen[-1] == ["base", *store.cfg.methods, "study", "theory"]
