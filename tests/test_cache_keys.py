"""The cache keys' config fields, checked against what each stage really reads.

A stage's key names the config fields it depends on (`*_FIELDS`, kept by hand next to each stage). A field a stage
reads but does not name would let a finished stage be reused after that field changed: a stale result. Here every
stage of two quick rounds (and the study, the selector choice and the report's encoder stage) runs with a config that
records which fields are read while the stage's own function runs; each read field must be in the stage's key or in
`config.UNKEYED_FIELDS` (fields that change where or how fast a stage runs, never what it writes)."""
import dataclasses
import pytest
from selfsynth.config import RunConfig, UNKEYED_FIELDS
from selfsynth.store import RunStore

FIELDS = {f.name for f in dataclasses.fields(RunConfig)}

class FieldReads:
    "A `RunConfig` subclass whose instances log `(stage, field)` for every field read while a stage function runs."
    def __init__(self):
        self.stack, self.reads = [], {}
        reads = self
        class Recording(RunConfig):
            def __getattribute__(self, name):
                if reads.stack and name in FIELDS: reads.reads.setdefault(reads.stack[-1], set()).add(name)
                return object.__getattribute__(self, name)
        self.cls = Recording

    def config(self, cfg: RunConfig) -> RunConfig:
        return self.cls(**{f: getattr(cfg, f) for f in FIELDS})

    def stage_wrapper(self, stage):
        "`RunStore.stage` with the stage function run under its name (the key's code digest stays the stage's own)."
        def wrapped_stage(store, name, fn, *a, **k):
            def run(ctx):
                self.stack.append(name)
                try: return fn(ctx)
                finally: self.stack.pop()
            run.__module__ = fn.__module__
            return stage(store, name, run, *a, **k)
        return wrapped_stage

@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run_config):
    "Two quick rounds of ours, L+GE and NL, their evaluations, the study and the report's stages, reads recorded."
    from selfsynth.rounds import run_round, method_selection_stages
    from selfsynth.evaluate import evaluate_stage, description_precision_stage
    from selfsynth.select import selection_study_stage
    from selfsynth.report import selector_choice_stage, encoder_precision_stage
    reads = FieldReads()
    cfg = tiny_run_config(tmp_path_factory.mktemp("keys"), rounds=2)
    store = RunStore(cfg.run_dir, reads.config(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunStore, "stage", reads.stage_wrapper(RunStore.stage))
        for m in ("ours", "lge", "nl"):
            run_round(store, m, 2)
            evaluate_stage(store, m, 2)
        evaluate_stage(store, "base", 0)
        method_selection_stages(store, "ours_cosine")
        selection_study_stage(store, ns=(1, 2), taus=(0.1,))
        selector_choice_stage(store)
        description_precision_stage(store)
        encoder_precision_stage(store, cfg.retriever, tau=0.3)
    return store, reads.reads

def test_the_recording_sees_every_kind_of_stage(run):
    store, reads = run
    names = {m["name"] for m in store.manifests()}
    kinds = {n.split("/")[0] for n in names}
    assert {"world", "describe", "embed", "select", "synthesize", "tune", "rejection", "eval", "report"} <= kinds
    assert {"select/cosine", "select/choice", "eval/descriptions"} <= names and any(n.startswith("select/study") for n in names)
    assert all(reads.get(n) for n in names - {"synthesize/nl", "rejection/nl/round-2"}), "a stage read no field: not recorded?"

def test_every_field_a_stage_reads_is_in_its_key(run):
    store, reads = run
    stale = {m["name"]: sorted(reads.get(m["name"], set()) - set(m["config"]) - set(UNKEYED_FIELDS)) for m in store.manifests()}
    assert not {n: f for n, f in stale.items() if f}, "fields read but not in the stage's cache key (a change would reuse a stale result)"

def test_the_unkeyed_fields_are_real_and_explained():
    assert set(UNKEYED_FIELDS) <= FIELDS
    assert all(isinstance(why, str) and len(why) > 20 for why in UNKEYED_FIELDS.values())

def test_an_unkeyed_read_is_caught(tmp_path, tiny_run_config, monkeypatch):
    "The check itself, on broken input: a stage that reads a field its key leaves out is reported."
    reads = FieldReads()
    cfg = tiny_run_config(tmp_path)
    store = RunStore(cfg.run_dir, reads.config(cfg))
    monkeypatch.setattr(RunStore, "stage", reads.stage_wrapper(RunStore.stage))
    store.stage("leaky", lambda ctx: dict(t=ctx.cfg.synth_temperature, s=ctx.cfg.seed), fields=["seed"])
    m = store.manifest("leaky")
    assert reads.reads["leaky"] - set(m["config"]) - set(UNKEYED_FIELDS) == {"synth_temperature"}

def test_a_changed_keyed_field_reruns_the_stage_and_an_unkeyed_one_does_not(run):
    "What the keys buy: the recorded stage `select` runs again when its τ changes, not when its chunk size does."
    from selfsynth.select import select_stage
    store, _ = run
    before = store.manifest("select")
    chunked = RunStore(store.root, store.cfg.replace(select_chunk=store.cfg.select_chunk // 2))
    assert select_stage(chunked)["key"] == before["key"] and store.manifest("select")["finished"] == before["finished"]
    other = RunStore(store.root, store.cfg.replace(tau=store.cfg.tau * 3))
    again = select_stage(other)
    assert again["key"] != before["key"] and again["config"]["tau"] == store.cfg.tau * 3
