"The design card's layout: settings.ini is the one list of requirements, setup.py builds the package from it, nbdev 3 still runs."
import configparser, re, subprocess, sys, tomllib
from pathlib import Path
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _settings():
    cp = configparser.ConfigParser(delimiters=['='])
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    return cp["DEFAULT"]


def _reqs(lines) -> set: return {str(Requirement(l)) for l in lines}


def _built_metadata(tmp_path):
    "The metadata setuptools builds from this checkout (the PEP 517 hook pip calls), parsed as an email message."
    import email
    out = tmp_path / "meta"; out.mkdir()
    code = f"from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel({str(out)!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    dist_info = out / r.stdout.strip().splitlines()[-1]
    meta = email.message_from_string((dist_info / "METADATA").read_text())
    return meta, (dist_info / "entry_points.txt").read_text()


def test_top_level_layout():
    for name in ("nbs", "selfsynth", "settings.ini", "setup.py", "data", "figures", "tests"): assert (ROOT / name).exists(), name


def test_built_package_takes_requirements_and_version_from_settings_ini_and_init(tmp_path):
    cfg, (meta, eps) = _settings(), _built_metadata(tmp_path)
    runtime = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    dev = [r.split(";")[0] for r in meta.get_all("Requires-Dist") if 'extra == "dev"' in r]
    assert _reqs(runtime) == _reqs(cfg["requirements"].split())
    assert _reqs(dev) == _reqs(cfg["dev_requirements"].split())
    assert meta.get_all("Provides-Extra") == ["dev"]
    import selfsynth
    from nbdev.config import get_config
    assert meta["Version"] == selfsynth.__version__ == get_config(ROOT).version  # nbdev 3's one place: selfsynth/__init__.py
    assert meta["Requires-Python"] == ">=" + cfg["min_python"] and meta["License-Expression"] == cfg["license"]
    assert "selfsynth = selfsynth.cli:main" in eps and "[nbdev]\nselfsynth = selfsynth._modidx:d" in eps


def test_setup_py_reports_the_version_nbdev_keeps():
    r = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, check=True, capture_output=True, text=True)
    init = (ROOT / "selfsynth" / "__init__.py").read_text()
    assert r.stdout.strip().splitlines()[-1] == re.search(r'__version__ = "(.+)"', init).group(1)


def test_pyproject_has_no_dependency_list_and_agrees_with_settings_ini():
    "pyproject.toml keeps what nbdev 3 reads; its [project] fields repeat settings.ini's and must not drift from them."
    pp, cfg = tomllib.loads((ROOT / "pyproject.toml").read_text()), _settings()
    proj = pp["project"]
    assert set(pp) == {"build-system", "project", "tool"} and set(pp["tool"]) == {"nbdev"}
    for k in ("dependencies", "optional-dependencies", "version", "scripts", "entry-points"):
        assert k not in proj and k in proj["dynamic"], k
    assert "version" not in cfg, "the version lives in selfsynth/__init__.py only"
    assert proj["name"] == cfg["lib_name"] and pp["tool"]["nbdev"]["lib_path"] == cfg["lib_path"]
    assert proj["description"] == cfg["description"]
    assert proj["keywords"] == cfg["keywords"].split()
    assert proj["requires-python"] == ">=" + cfg["min_python"]
    assert proj["authors"] == [{"name": cfg["author"], "email": cfg["author_email"]}]
    assert proj["urls"]["Repository"] == cfg["git_url"]
    assert proj["urls"]["Documentation"] == cfg["doc_host"] + cfg["doc_baseurl"]


def test_nbdev_reads_pyproject_despite_settings_ini():
    "nbdev 3 looks for [tool.nbdev] first and only complains about a settings.ini when it finds none."
    from nbdev.config import get_config
    c = get_config(ROOT)
    assert c.config_file == ROOT / "pyproject.toml" and c.lib_name == "selfsynth" and c.git_url.endswith("selfsynth/selfsynth")


def test_makefile_reinstalls_when_the_package_definition_changes():
    rule = next(l for l in (ROOT / "Makefile").read_text().splitlines() if l.startswith("$(VENV)/.installed:"))
    assert set(rule.split(":", 1)[1].split()) >= {"pyproject.toml", "settings.ini", "setup.py"}
