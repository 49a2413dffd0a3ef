"`make docs` builds a page per notebook, and the index renders the module list in a real browser."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_docs_build_and_index_renders_module_list(tmp_path):
    out = tmp_path / "_docs"
    subprocess.run([sys.executable, "-c", f"from selfsynth.site import build_site; build_site({str(out)!r})"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    notebooks = [p for p in (ROOT / "nbs").glob("*.ipynb") if p.stem != "index"]
    pages = {p.name for p in out.glob("*.html")} - {"index.html"}
    assert len(pages) == len(notebooks)
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                          "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "selfsynth" in dom and "Quick start" in dom
    for page in pages: assert f'href="{page}"' in dom, f"index does not link {page}"
    for module in ("selfsynth.config", "selfsynth.store", "selfsynth.select", "selfsynth.tune"): assert module in dom
    config_page = (out / "config.html").read_text()
    assert "RunConfig" in config_page and "apply_overrides" in config_page  # API docs rendered from the source
