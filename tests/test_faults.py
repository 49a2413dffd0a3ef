"""Faults met in the middle of a run (issue 22): an LLM endpoint that times out, answers 5xx or malformed JSON, or
drops the connection while several requests are in flight; damaged artifacts of finished stages; a full disk during
an atomic write."""
import errno, http.server, inspect, json, logging, socket, threading, time
from contextlib import contextmanager
from pathlib import Path
import pytest
from PIL import Image
from selfsynth.config import preset
from selfsynth.store import RunStore, atomic_path, write_json, write_jsonl, read_jsonl
from selfsynth.llm import LLMEndpoint, LLMError, chat, generate_concepts
from selfsynth.select import endpoint_asker
import selfsynth.models  # noqa: F401  (the asker's image reader; imported once here rather than by the first request)
from selfsynth.integrity import record_outputs, seal, damaged_outputs

# ---------------------------------------------------------------- a faulty endpoint

def completion(text): return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


@contextmanager
def faulty_server(script: dict, healthy: str = "- a\n- b\n- c"):
    """A threaded chat-completions server on 127.0.0.1. `script` maps a key (found in the request body) to the faults
    of its first attempts, in order: "timeout" (answer after 1.5 s), "5xx" (503 with Retry-After: 3600), "500",
    "malformed" (not JSON), "cut" (JSON cut short), "drop" (close without an answer). Later attempts are answered
    with `healthy`. Yields (base url, {key: [attempt times]})."""
    seen, lock = {}, threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            key = next((k for k in script if k in body), None)
            with lock:
                times = seen.setdefault(key, []); times.append(time.monotonic()); n = len(times)
            faults = script.get(key, [])
            fault = faults[n - 1] if n <= len(faults) else None
            if fault == "drop": self.close_connection = True; self.connection.shutdown(socket.SHUT_RDWR); return
            if fault == "timeout": time.sleep(1.5)
            if fault in ("5xx", "500"):
                self.send_response(503 if fault == "5xx" else 500)
                if fault == "5xx": self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", "4"); self.end_headers(); self.wfile.write(b"busy"); return
            data = {"malformed": b"<html>bad gateway</html>", "cut": completion(healthy)[:25]}.get(fault, completion(healthy))
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)

        def log_message(self, *a): pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally: server.shutdown(); server.server_close()


SCRIPT = {"Timeout Tit": ["timeout"], "Busy Bunting": ["5xx", "5xx"], "Garbled Grebe": ["malformed", "cut"],
          "Dropped Dove": ["drop"], "Fine Finch": [], "Dead Duck": ["500"] * 99}


def test_concepts_survive_every_fault_in_flight_and_a_rerun_continues_from_the_cache(tmp_path, caplog):
    labels = list(SCRIPT)  # all six in flight at once
    with faulty_server(SCRIPT) as (url, seen):
        ep = LLMEndpoint(url, "m", timeout=0.5, retries=3, backoff=0.05, max_wait=0.2)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, "selfsynth"), pytest.raises(LLMError) as e:
            generate_concepts(labels, ep, cache_dir=tmp_path, workers=len(labels))
        took = time.monotonic() - t0
    msg = str(e.value)
    assert msg.startswith(f"LLM endpoint {url}/chat/completions failed for class 'Dead Duck' after 4 attempts")
    assert "HTTP 500" in msg and f"5 of 6 classes are cached in {tmp_path}: a rerun asks only for the rest" in msg
    assert {k: len(v) for k, v in seen.items()} == {"Timeout Tit": 2, "Busy Bunting": 3, "Garbled Grebe": 3,
                                                    "Dropped Dove": 2, "Fine Finch": 1, "Dead Duck": 4}
    gaps = [b - a for a, b in zip(seen["Dead Duck"], seen["Dead Duck"][1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # back-off doubles, capped at max_wait
    assert took < 5  # Retry-After: 3600 was capped at max_wait too
    assert "Timeout Tit" in caplog.text and "attempt 1/4 failed" in caplog.text
    assert len(list(tmp_path.glob("*.json"))) == 5
    # the rerun asks only for the class that failed
    with faulty_server({}) as (url2, seen2):
        got = generate_concepts(labels, LLMEndpoint(url2, "m", backoff=0.01), cache_dir=tmp_path, workers=4)
    assert list(got) == labels and all(v == ["a", "b", "c"] for v in got.values())
    assert {k: len(v) for k, v in seen2.items()} == {None: 1}  # one request, for Dead Duck


def test_request_loop_is_bounded_in_time():
    with faulty_server({"slow": ["timeout"] * 99}) as (url, seen):
        ep = LLMEndpoint(url, "m", timeout=0.3, retries=1000, backoff=0.01, max_time=1.0)
        t0 = time.monotonic()
        with pytest.raises(LLMError, match=rf"{url}/chat/completions failed for slow item after \d attempts in 1\.\d s"):
            chat(ep, [{"role": "user", "content": "slow"}], item="slow item")
        assert time.monotonic() - t0 < 1.6 and 1 < len(seen["slow"]) < 6


def test_direct_selector_survives_faults_and_continues_from_its_cache(tmp_path):
    img = tmp_path / "red.png"; Image.new("RGB", (8, 8), (250, 0, 0)).save(img)
    script = {"q-timeout": ["timeout"], "q-5xx": ["5xx"], "q-malformed": ["malformed"], "q-drop": ["drop"],
              "q-fine": [], "q-dead": ["500"] * 99}
    questions = list(script)
    with faulty_server(script, healthy="Yes.") as (url, seen):
        ask = endpoint_asker(url, "m", timeout=0.5, retries=2, backoff=0.02, workers=6, cache_dir=tmp_path / "c")
        ask.endpoint.max_wait = 0.1
        with pytest.raises(LLMError, match=r"failed for image .*red.png, question 'q-dead' after 3 attempts.*"
                                           r"5 of 6 questions answered, cached in"):
            ask([img] * 6, questions)
    assert {k: len(v) for k, v in seen.items()} == {"q-timeout": 2, "q-5xx": 2, "q-malformed": 2, "q-drop": 2,
                                                    "q-fine": 1, "q-dead": 3}
    with faulty_server({}, healthy="No.") as (url2, seen2):
        answers = endpoint_asker(url2, "m", cache_dir=tmp_path / "c")([img] * 6, questions)
    assert answers == ["Yes."] * 5 + ["No."] and sum(map(len, seen2.values())) == 1


def test_refusal_is_not_retried():
    class H(http.server.BaseHTTPRequestHandler):
        n = 0
        def do_POST(self):
            H.n += 1; self.send_response(401); self.send_header("Content-Length", "7"); self.end_headers(); self.wfile.write(b"bad key")
        def log_message(self, *a): pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(LLMError, match=r"refused the request for class 'X' \(HTTP 401"):
            chat(LLMEndpoint(f"http://127.0.0.1:{server.server_port}/v1", "m", backoff=0.01), [], item="class 'X'")
    finally: server.shutdown(); server.server_close()
    assert H.n == 1

# ---------------------------------------------------------------- damaged artifacts

def _hooked() -> bool:
    "Whether `RunStore.stage` records and checks output digests (the 01_store side of issue 22)."
    return "damaged_outputs" in inspect.getsource(RunStore.stage)

needs_store_hook = pytest.mark.xfail(not _hooked(), strict=True,
                                     reason="RunStore.stage does not call selfsynth.integrity yet (01_store change pending)")


def _outputs(store):
    write_jsonl(store.path("out/rows.jsonl"), [{"i": i, "text": f"row {i}"} for i in range(50)])
    store.path("out/model").mkdir(parents=True, exist_ok=True)
    (store.path("out/model") / "model.safetensors").write_bytes(bytes(range(256)) * 16)
    return ["out/rows.jsonl", "out/model"]


def test_damage_is_named_file_by_file(tmp_path):
    store = RunStore(tmp_path / "run", preset("quick"))
    outs = _outputs(store)
    m = seal(dict(name="demo", key="k", outputs=outs, files=record_outputs(store.root, outs), counts={"rows": 50}))
    assert damaged_outputs(store, m) == []
    assert damaged_outputs(store, {k: v for k, v in m.items() if k not in ("files", "seal")}) == []  # an old manifest
    rows = store.path("out/rows.jsonl"); text = rows.read_text()
    rows.write_text(text[: len(text) // 2])  # truncated JSONL
    (store.path("out/model") / "model.safetensors").write_bytes(b"")  # zero-byte safetensors
    assert damaged_outputs(store, m) == [f"out/rows.jsonl: {len(text) // 2} bytes, {len(text)} when the stage finished",
                                         "out/model/model.safetensors: 0 bytes, 4096 when the stage finished"]
    rows.write_text(text.replace("row 7", "row 8"))  # same size, other contents
    assert damaged_outputs(store, m)[0] == "out/rows.jsonl: contents changed since the stage finished (same size)"
    edited = {**m, "counts": {"rows": 51}}  # a manifest edited by hand
    assert damaged_outputs(store, edited) == [f"{store.manifest_path('demo')} was edited or damaged (its seal does not match its contents)"]


class Counting:
    "A stage function that writes the outputs and counts its calls."
    def __init__(self): self.calls = 0
    def __call__(self, ctx):
        self.calls += 1; _outputs(ctx.store); return {"rows": 50}


def _damage(store, how):
    if how == "truncated jsonl":
        p = store.path("out/rows.jsonl"); p.write_text(p.read_text()[:100]); return "out/rows.jsonl"
    if how == "zero-byte safetensors":
        store.path("out/model/model.safetensors").write_bytes(b""); return "out/model/model.safetensors"
    p = store.manifest_path("demo"); m = json.loads(p.read_text()); m["counts"]["rows"] = 5
    p.write_text(json.dumps(m)); return str(p)


@needs_store_hook
@pytest.mark.parametrize("how", ["truncated jsonl", "zero-byte safetensors", "edited manifest"])
def test_a_damaged_stage_is_named_and_recomputed(tmp_path, caplog, how):
    store, fn = RunStore(tmp_path / "run", preset("quick")), Counting()
    run = lambda: store.stage("demo", fn, outputs=["out/rows.jsonl", "out/model"])
    run(); run()
    assert fn.calls == 1  # intact: skipped
    culprit = _damage(store, how)
    with caplog.at_level(logging.WARNING, "selfsynth"): m = run()
    assert fn.calls == 2 and culprit in caplog.text and "demo" in caplog.text
    assert len(read_jsonl(store.path("out/rows.jsonl"))) == 50 and m["counts"] == {"rows": 50}
    assert damaged_outputs(store, store.manifest("demo")) == []
    run(); assert fn.calls == 2


def test_an_old_manifest_without_records_is_still_trusted(tmp_path):
    store, fn = RunStore(tmp_path / "run", preset("quick")), Counting()
    store.stage("demo", fn, outputs=["out/rows.jsonl", "out/model"])
    p = store.manifest_path("demo"); m = json.loads(p.read_text())
    p.write_text(json.dumps({k: v for k, v in m.items() if k not in ("files", "seal")}))
    store.stage("demo", fn, outputs=["out/rows.jsonl", "out/model"])
    assert fn.calls == 1

# ---------------------------------------------------------------- disk full

@pytest.fixture
def disk_full(monkeypatch):
    "Make `Path.write_text` write half its text, then fail with ENOSPC (for files under a folder named `full`)."
    real = Path.write_text
    def write_text(self, text, *a, **kw):
        if "full" not in self.parts[-4:]: return real(self, text, *a, **kw)
        with open(self, "w") as f: f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", write_text)


def test_atomic_write_on_a_full_disk_keeps_the_previous_version(tmp_path, monkeypatch):
    p = tmp_path / "full" / "results.json"
    write_json(p, {"v": 1})
    real = Path.write_text
    def half(self, text, *a, **kw):
        with open(self, "w") as f: f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError) as e: write_json(p, {"v": 2, "more": list(range(100))})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(Path, "write_text", real)
    assert json.loads(p.read_text()) == {"v": 1} and [q.name for q in p.parent.iterdir()] == ["results.json"]  # no temporaries left


@pytest.mark.xfail("filename" not in inspect.getsource(atomic_path), strict=True,
                   reason="store.atomic_path does not name the file in a write error yet (01_store change pending)")
def test_a_full_disk_error_names_the_file(tmp_path, disk_full):
    p = tmp_path / "full" / "results.json"
    with pytest.raises(OSError) as e: write_json(p, {"v": 2})
    assert e.value.errno == errno.ENOSPC and str(p) in str(e.value)


def test_a_stage_interrupted_by_a_full_disk_stays_unfinished(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run", preset("quick"))
    def fn(ctx):
        write_jsonl(ctx.path("full/rows.jsonl"), [{"i": i, "tau": ctx.cfg.tau} for i in range(100)]); return {}
    first = store.stage("demo", fn, fields=["tau"], outputs=["full/rows.jsonl"])
    before = store.path("full/rows.jsonl").read_bytes()
    store.cfg = store.cfg.replace(tau=0.5)  # the stage must run again
    real = Path.write_text
    def half(self, text, *a, **kw):
        with open(self, "w") as f: f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError): store.stage("demo", fn, fields=["tau"], outputs=["full/rows.jsonl"])
    monkeypatch.setattr(Path, "write_text", real)
    assert store.path("full/rows.jsonl").read_bytes() == before  # the previous artifact, whole
    assert store.manifest("demo") == first  # still the old key: the stage with tau=0.5 is not finished
    m = store.stage("demo", fn, fields=["tau"], outputs=["full/rows.jsonl"])  # space again: it runs
    assert m["key"] != first["key"] and read_jsonl(store.path("full/rows.jsonl"))[0]["tau"] == 0.5
