"""`make docs` builds a page per notebook with the demos' outputs, a sidebar and an offline search; checked in a real
browser. Screenshots of the index, world and select pages are kept in `_docs/screenshots/` for a reviewer."""
import json, re, shutil, subprocess, sys
from pathlib import Path
from urllib.parse import unquote, urlparse
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "_docs" / "screenshots"


def _chrome(tmp_path, *args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}", *args],
                          capture_output=True, text=True, timeout=timeout)


# The notebooks whose outputs these tests look at (images, search hits, screenshots). `make docs` executes every notebook;
# here the others' pages are built from code and prose alone, since running every notebook's demos is what `nbdev-test`
# (the second half of `make test`) does, with the same cells.
EXECUTED = ("03_world", "11_select")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_docs"
    r = subprocess.run([sys.executable, "-c", f"from selfsynth.site import build_site; build_site({str(out)!r}, execute={EXECUTED!r})"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not re.search(r"^build_site: \S+ stopped: ", r.stdout, re.M), r.stdout[-3000:]  # a notebook failed part-way
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_docs_build_and_index_renders_module_list(site, tmp_path):
    notebooks = [p for p in (ROOT / "nbs").glob("*.ipynb") if p.stem != "index"]
    pages = {p.name for p in site.glob("*.html")} - {"index.html"}
    assert len(pages) == len(notebooks)
    dom = _chrome(tmp_path, "--dump-dom", (site / "index.html").as_uri()).stdout
    assert "selfsynth" in dom and "Quick start" in dom
    for page in pages: assert f'href="{page}"' in dom, f"index does not link {page}"
    for module in ("selfsynth.config", "selfsynth.store", "selfsynth.select", "selfsynth.tune"): assert module in dom
    config_page = (site / "config.html").read_text()
    assert "RunConfig" in config_page and "apply_overrides" in config_page  # API docs rendered from the source


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_sidebar_lists_every_notebook_in_order_on_every_page(site, tmp_path):
    order = [p.stem for p in sorted((ROOT / "nbs").glob("*.ipynb")) if p.stem != "index"]
    for page in ("index.html", "world.html", "select.html"):
        dom = _chrome(tmp_path, "--dump-dom", (site / page).as_uri()).stdout
        side = re.search(r'<nav id="ss-sidebar".*?</nav>', dom, re.S).group(0)
        links = re.findall(r'<ol class="ss-pages">(.*?)</ol>', side, re.S)[0]
        hrefs = re.findall(r'href="([^"]+)"', links)
        assert hrefs[0] == "index.html" and len(hrefs) == len(order) + 1, hrefs
        assert [h.removesuffix(".html") for h in hrefs[1:]] == [re.sub(r"^\d+[a-z0-9]*_", "", s) for s in order]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_search_for_infonce_finds_the_select_page(site, tmp_path):
    dom = _chrome(tmp_path, "--dump-dom", (site / "index.html").as_uri() + "?q=InfoNCE").stdout
    hits = re.findall(r'<li class="ss-hit"><a href="([^"]+)"', dom)
    assert "select.html" in hits, hits
    assert not re.findall(r'<li class="ss-hit">', _chrome(tmp_path, "--dump-dom", (site / "index.html").as_uri() + "?q=zqxjkv").stdout)


@pytest.mark.skipif(shutil.which("quarto") is not None, reason="with Quarto, build_site is nbdev-docs")
def test_notebooks_to_execute_must_exist(tmp_path):
    from selfsynth.site import build_site
    with pytest.raises(ValueError, match=r"no notebook \['03_wrold'\]"): build_site(tmp_path / "_docs", execute=["03_world", "03_wrold"])
    assert not (tmp_path / "_docs").exists()


def test_pages_show_the_demos_outputs(site):
    "The world page shows its birds, the select page its plots: outputs of the executed notebooks, images included."
    for page in ("world.html", "select.html"):
        assert len(re.findall(r'<img[^>]+src="data:image/png', (site / page).read_text())) >= 1, f"{page}: no rendered image"


def _exported_names(py: Path) -> list:
    import ast
    return next((list(ast.literal_eval(n.value)) for n in ast.parse(py.read_text()).body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", None) == "__all__" for t in n.targets)), [])


def test_every_exported_name_has_a_section_on_its_page(site):
    "API reference: each name in a module's `__all__` is a heading (an anchor) on the page of the notebook it came from."
    missing, modules = [], 0
    for py in sorted((ROOT / "selfsynth").glob("*.py")):
        if not (m := re.search(r"File to edit: \.\./nbs/(\S+)\.ipynb", py.read_text())): continue
        page = site / (re.sub(r"^\d+[a-z0-9]*_", "", Path(m.group(1)).name) + ".html")
        html, modules = page.read_text(), modules + 1
        ids = set(re.findall(r'<h[1-6][^>]*\sid="([^"]+)"', html))
        missing += [f"{page.name}: {py.stem}.{n}" for n in _exported_names(py) if n not in ids]
    assert modules >= 20 and not missing, missing


def test_no_page_links_to_a_missing_file(site):
    bad = []
    for page in site.glob("*.html"):
        for ref in re.findall(r'(?:href|src)="([^"#]+)(?:#[^"]*)?"', page.read_text()):
            u = urlparse(ref)
            if u.scheme or ref.startswith("//") or ref.startswith("data:"): continue
            if not (site / unquote(u.path)).exists(): bad.append(f"{page.name} -> {ref}")
    assert not bad, bad


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_screenshots_for_review(site, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for page in ("index", "world", "select"):
        shot = SHOTS / f"{page}.png"
        _chrome(tmp_path, f"--screenshot={shot}", "--window-size=1400,1800", (site / f"{page}.html").as_uri())
        assert shot.exists() and shot.stat().st_size > 10_000, shot
