import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from selfsynth.config import preset, ConfigError
from selfsynth.store import RunStore, write_json, read_json, read_jsonl, write_jsonl, atomic_path

CALLS = []

def draw(ctx):
    CALLS.append("draw"); write_json(ctx.path("draw/x.json"), [ctx.cfg.seed, ctx.cfg.world_classes])
    return {"n": 2}

def scale(ctx):
    CALLS.append("scale"); write_json(ctx.path("scale/y.json"), [v / ctx.cfg.tau for v in read_json(ctx.path("draw/x.json"))])

def tally(ctx):
    CALLS.append("tally"); write_json(ctx.path("tally/z.json"), sum(read_json(ctx.path("scale/y.json"))) + ctx.cfg.rounds)

def pipeline(store):
    store.stage("draw", draw, fields=["world_classes"], outputs=["draw/x.json"])
    store.stage("scale", scale, fields=["tau"], inputs=["draw/x.json"], outputs=["scale/y.json"])
    return store.stage("tally", tally, fields=["rounds"], inputs=["scale/y.json"], outputs=["tally/z.json"])


@pytest.fixture
def run(tmp_path):
    CALLS.clear(); return tmp_path / "run"


def test_finished_stages_are_not_recomputed(run):
    cfg = preset("quick", run_dir=str(run))
    m = pipeline(RunStore(run, cfg))
    assert CALLS == ["draw", "scale", "tally"] and m["wall_s"] >= 0 and m["inputs"]["scale/y.json"].startswith("stage:")
    pipeline(RunStore(run, cfg))
    assert CALLS == ["draw", "scale", "tally"]
    assert RunStore(run, cfg).manifest("draw")["counts"] == {"n": 2}


def test_a_changed_field_invalidates_its_stage_and_dependents_only(run):
    cfg = preset("quick", run_dir=str(run))
    pipeline(RunStore(run, cfg)); CALLS.clear()
    pipeline(RunStore(run, cfg.replace(tau=0.5)))
    assert CALLS == ["scale", "tally"]; CALLS.clear()
    pipeline(RunStore(run, cfg.replace(tau=0.5, rounds=3)))
    assert CALLS == ["tally"]; CALLS.clear()
    pipeline(RunStore(run, cfg.replace(tau=0.5, rounds=3, world_classes=13)))
    assert CALLS == ["draw", "scale", "tally"]


def test_a_missing_output_or_edited_external_input_reruns(run, tmp_path):
    cfg = preset("quick", run_dir=str(run))
    pipeline(RunStore(run, cfg)); CALLS.clear()
    (run / "scale/y.json").unlink()
    pipeline(RunStore(run, cfg))
    assert CALLS == ["scale"]  # same key, same result: tally's input digest is unchanged
    ext = tmp_path / "ext.json"; write_json(ext, [1])
    store = RunStore(run, cfg)
    def use(ctx): write_json(ctx.path("u.json"), read_json(ext))
    k1 = store.stage("use", use, inputs=[str(ext)], outputs=["u.json"])["key"]
    write_json(ext, [2])
    assert store.stage("use", use, inputs=[str(ext)], outputs=["u.json"])["key"] != k1 and read_json(run / "u.json") == [2]


def test_atomic_write_keeps_old_version_on_failure(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"i": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text('{"i": 2}\n{"i": '); raise RuntimeError("killed")
    assert read_jsonl(p) == [{"i": 1}] and [q.name for q in tmp_path.iterdir()] == ["a.jsonl"]


def test_run_dir_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and has no config.json"): RunStore(tmp_path, preset("quick"))


SCRIPT = textwrap.dedent('''
    import sys, time
    from selfsynth.config import preset
    from selfsynth.store import RunStore, write_json, read_json
    run, log = sys.argv[1], sys.argv[2]
    def first(ctx):
        open(log, "a").write("first\\n"); write_json(ctx.path("first.json"), list(range(20)))
    def slow(ctx):
        def work(items):
            out = []
            for i in items:
                time.sleep(0.15); open(log, "a").write(f"item {i}\\n"); out.append({"i": i, "sq": i * i})
            return out
        rows = ctx.chunked("slow.jsonl").run(read_json(ctx.path("first.json")), work, chunk_size=4)
        return {"rows": len(rows)}
    store = RunStore(run, preset("quick", run_dir=run))
    store.stage("first", first, outputs=["first.json"])
    print(store.stage("slow", slow, inputs=["first.json"], outputs=["slow.jsonl"])["counts"])
''')


def test_sigkill_midway_resumes_and_loses_nothing_finished(tmp_path):
    script, run, log = tmp_path / "s.py", tmp_path / "run", tmp_path / "log.txt"
    script.write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(run), str(log)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once 2 chunks are finished, in the middle of the third
        parts = list(run.glob(".slow.jsonl.*.parts/*.jsonl")) if run.exists() else []
        if len(parts) >= 2: break
        time.sleep(0.05)
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL and not (run / "slow.jsonl").exists()
    done_before = len(list(run.glob(".slow.jsonl.*.parts/*.jsonl")))
    assert done_before >= 2
    out = subprocess.run([sys.executable, str(script), str(run), str(log)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert read_jsonl(run / "slow.jsonl") == [{"i": i, "sq": i * i} for i in range(20)]
    lines = log.read_text().splitlines()
    assert lines.count("first") == 1  # the finished stage was not recomputed
    redone = len([l for l in lines if l.startswith("item")]) - 20
    assert 0 < redone <= 4  # only the chunk in flight at the kill is redone
    assert not list(run.glob(".slow.jsonl.*.parts"))  # parts joined and removed


def test_a_code_change_in_any_module_reruns_every_stage(tmp_path, monkeypatch):
    "Stale results after a code change: a stage that calls a helper of another module reruns when that helper changes."
    import shutil, selfsynth.store as store_mod
    from selfsynth.synthesize import contains_label
    pkg = tmp_path / "pkg"
    shutil.copytree(store_mod.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(store_mod, "PACKAGE_DIR", pkg)
    store = RunStore(tmp_path / "run", preset("quick"))
    calls = []
    def judge(ctx):  # calls the label rule of synthesize.py from a stage defined elsewhere
        calls.append("judge"); return dict(named=contains_label("a red finch", "red finch"))
    def count(ctx): calls.append("count"); return {}
    run_all = lambda: (store.stage("judge", judge), store.stage("count", count, inputs=[]))
    run_all(); run_all()
    assert calls == ["judge", "count"]  # unchanged code: both reused
    src = (pkg / "synthesize.py").read_text()
    (pkg / "synthesize.py").write_text(src.replace("return normalize_label(label) in normalize_label(answer)",
                                                   "return normalize_label(label) == normalize_label(answer)"))
    run_all()
    assert calls == ["judge", "count"] * 2  # one function changed in one module: every stage reran
    run_all()
    assert len(calls) == 4
