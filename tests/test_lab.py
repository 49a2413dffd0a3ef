"""`make lab` works for a reader: JupyterLab, started as `make lab` starts it (`jupyter lab nbs`, here headless on a
free loopback port with a random token), serves the Lab UI, opens a notebook in headless Chromium without asking for a
kernel, and runs every cell of that notebook through the Jupyter server API (a session with the notebook's own
kernelspec, then execute requests on the kernel's websocket channels) without an error output.

The server's checkpoints, workspaces and runtime files go to a temporary folder, and the test checks that the
notebook it opened is left byte for byte as it was."""
import json, os, secrets, shutil, socket, subprocess, sys, time, uuid
from datetime import datetime, timezone
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER = Path(sys.executable).parent / "jupyter"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOK = "00_config.ipynb"  # small and fast (about 2 s of cells); writes nothing outside a temporary folder
requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")  # websocket-client, a jupyter_server requirement


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on `nbs/` (as `make lab`), headless on loopback; yields (base url, token)."
    tmp, port, token = tmp_path_factory.mktemp("lab"), _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_NO_CONFIG": "1"}
    cmd = [str(JUPYTER), "lab", "nbs", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")  # containers run as root; Lab refuses without it
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 30 s
            if proc.poll() is not None: break
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok: break
            except requests.ConnectionError: pass
            time.sleep(0.1)
        assert proc.poll() is None, "jupyter lab exited:\n" + (tmp / "lab.log").read_text()[-3000:]
        yield url, token
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


def test_lab_serves_its_ui_and_refuses_without_token(lab):
    url, token = lab
    page = requests.get(f"{url}/lab", params={"token": token}, timeout=30)
    assert page.ok and "jupyter-config-data" in page.text and "JupyterLab" in page.text
    assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403  # the token is required
    listing = requests.get(f"{url}/api/contents", params={"token": token}, timeout=10).json()
    assert NOTEBOOK in {c["name"] for c in listing["content"]}, "the server root is not nbs/"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_chromium_opens_the_notebook_in_lab_without_asking_for_a_kernel(lab, tmp_path):
    url, token = lab
    before = (ROOT / "nbs" / NOTEBOOK).read_bytes()
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                        "--window-size=1400,1000", "--virtual-time-budget=25000", "--dump-dom",
                        f"{url}/lab/tree/{NOTEBOOK}?token={token}&reset"], capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert "jp-LabShell" in dom, dom[-2000:] + r.stderr[-2000:]
    assert "jp-NotebookPanel" in dom and "jp-Notebook" in dom, "the notebook did not open"
    assert "Select Kernel" not in dom, "Lab asks for a kernel: the notebook has no usable kernelspec"
    assert "default_exp config" in dom or "RunConfig" in dom, "the notebook's cells are not shown"
    assert (ROOT / "nbs" / NOTEBOOK).read_bytes() == before, "opening it in Lab changed the notebook"


def _message(code: str, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


def _execute(ws, code: str, session: str, timeout: float = 60) -> tuple[dict, list]:
    "Run `code` on the kernel behind websocket `ws`; its execute_reply content and its iopub outputs."
    msg = _message(code, session)
    ws.send(json.dumps(msg))
    reply, outputs, idle, t0 = None, [], False, time.time()
    while reply is None or not idle:
        assert time.time() - t0 < timeout, f"no reply in {timeout} s to:\n{code[:500]}"
        m = json.loads(ws.recv())
        if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]: continue
        kind = m["msg_type"]
        if m["channel"] == "shell" and kind == "execute_reply": reply = m["content"]
        elif kind == "status": idle = m["content"]["execution_state"] == "idle"
        elif kind in ("stream", "display_data", "execute_result", "error"): outputs.append({"output_type": kind, **m["content"]})
    return reply, outputs


def test_every_cell_of_the_notebook_runs_through_the_server_api(lab):
    url, token = lab
    auth = {"Authorization": f"token {token}"}
    before = (ROOT / "nbs" / NOTEBOOK).read_bytes()
    model = requests.get(f"{url}/api/contents/{NOTEBOOK}", headers=auth, timeout=30).json()  # what Lab reads to open it
    nb = model["content"]
    kernel_name = nb["metadata"]["kernelspec"]["name"]  # what Lab starts without asking
    assert kernel_name in requests.get(f"{url}/api/kernelspecs", headers=auth, timeout=10).json()["kernelspecs"]
    s = requests.post(f"{url}/api/sessions", headers=auth, timeout=60,
                      json={"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook", "kernel": {"name": kernel_name}})
    assert s.ok, s.text  # 201; the session Lab's UI made for the notebook, if the browser test opened it, is reused
    sid, kid = s.json()["id"], s.json()["kernel"]["id"]
    ws = websocket.create_connection(f"ws://{url.removeprefix('http://')}/api/kernels/{kid}/channels?session_id={uuid.uuid4().hex}",
                                     header=[f"Authorization: token {token}"], timeout=60)
    try:
        session, errors, ran = uuid.uuid4().hex, [], 0
        cells = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"].strip()]
        assert len(cells) >= 10
        for i, c in enumerate(cells):
            reply, outputs = _execute(ws, c["source"], session)
            ran += 1
            bad = [o for o in outputs if o["output_type"] == "error"] + ([reply] if reply["status"] != "ok" else [])
            if bad: errors.append(f"cell {i} ({c['source'][:60]!r}): {bad[0].get('ename')}: {bad[0].get('evalue')}"); break
        assert not errors, errors
        assert ran == len(cells)
        _, out = _execute(ws, "print(type(preset('quick')).__name__, preset('quick').world_classes)", session)
        assert "RunConfig 12" in "".join(o.get("text", "") for o in out)  # the notebook's definitions live in the kernel
    finally:
        ws.close()
        requests.delete(f"{url}/api/sessions/{sid}", headers=auth, timeout=30)
    assert (ROOT / "nbs" / NOTEBOOK).read_bytes() == before
