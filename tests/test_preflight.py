"Tests of selfsynth.preflight and the CLI's use of it: each broken input is one line, exit code 2, nothing touched."
import json, shutil, socket, time
from pathlib import Path
import pytest
from selfsynth.cli import main
from selfsynth.config import preset
from selfsynth.data import write_fixture, write_concepts, load_chest_xray
from selfsynth.preflight import preflight, safetensors_problem, run_dir_problems

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "data" / "mini-llava"


@pytest.fixture
def chest(tmp_path):
    "A chest X-ray tree in its distributed layout and a concept file covering both classes."
    root = write_fixture("chest-xray", tmp_path / "cx")
    write_concepts({"normal": ["clear lungs", "sharp diaphragm", "no opacity"],
                    "pneumonia": ["patchy opacity", "consolidation", "air bronchograms"]}, tmp_path / "concepts.json")
    return root, tmp_path / "concepts.json"


def run_cli(argv, run, capsys):
    "`selfsynth ARGV --run-dir RUN`: exit code and stderr lines; the run folder must not exist afterwards."
    t0 = time.perf_counter()
    code = main(argv + ["--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert not run.exists(), "preflight must not create the run folder"
    return code, err, time.perf_counter() - t0


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    "A tiny random sentence-transformers encoder (benchmarks/paper_round.py's): a retriever that is not the offline judge."
    import importlib.util
    spec = importlib.util.spec_from_file_location("paper_round", Path(__file__).resolve().parent.parent / "benchmarks/paper_round.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    folder = tmp_path_factory.mktemp("retriever") / "encoder"
    mod.build_encoder(folder, "tiny")
    return str(folder)


def test_good_configs_pass_and_touch_nothing(tmp_path, chest, retriever):
    assert preflight(preset("quick", run_dir=str(tmp_path / "run"))) == []
    root, concepts = chest
    cfg = preset("chest-xray", data_root=str(root), concepts=str(concepts), model="data/mini-llava",
                 retriever=retriever, run_dir=str(tmp_path / "run2"))
    assert preflight(cfg) == []
    assert preflight(cfg.replace(retriever="all-MiniLM-L6-v2")) == [  # the offline judge would grade with the retriever
        "judge: config key 'retriever' is 'all-MiniLM-L6-v2', the offline judge's encoder: the judge must not be the training "
        "signal (use judge=llm, or another retriever)"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


@pytest.mark.parametrize("case", ["missing model", "not llava", "empty weights", "missing retriever", "hub id offline"])
def test_broken_model_or_retriever_is_one_line_exit_2(tmp_path, capsys, monkeypatch, case):
    import huggingface_hub.constants
    argv = ["round", "--preset", "quick", "--round", "1"]
    if case == "missing model":
        argv += ["--model", str(tmp_path / "llava-1.5-7b-hf")]; want = f"model: {tmp_path / 'llava-1.5-7b-hf'}: no such folder"
    elif case == "not llava":
        (tmp_path / "bert").mkdir(); (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        argv += ["--model", str(tmp_path / "bert")]; want = "not a LLaVA-like model (config.json model_type 'bert'"
    elif case == "empty weights":
        shutil.copytree(MINI, tmp_path / "m"); (tmp_path / "m" / "model.safetensors").write_bytes(b"")
        argv += ["--model", str(tmp_path / "m")]; want = f"model: {tmp_path / 'm' / 'model.safetensors'}: 0 bytes, not a safetensors file"
    elif case == "missing retriever":
        argv += ["--retriever", str(tmp_path / "e5-large-v2")]; want = f"retriever: {tmp_path / 'e5-large-v2'}: no such folder"
    else:  # a Hub id neither cached nor fetchable
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        argv += ["--retriever", "intfloat/e5-large-v2"]
        want = "retriever: intfloat/e5-large-v2: no such folder, not in the Hugging Face cache, and the Hub does not answer"
    code, err, _ = run_cli(argv, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("selfsynth: preflight: ") and want in err[0], err


def test_data_problems_concepts_and_images(tmp_path, capsys, chest, retriever):
    root, concepts = chest
    recs = load_chest_xray(root)
    bad = [r for r in recs if r.label == "normal" and r.split == "train"]
    Path(bad[0].image).write_bytes(b"\xff\xd8\xff not really a jpeg")  # garbage
    Path(bad[1].image).write_bytes(Path(bad[1].image).read_bytes()[:-40])  # cut short: no end-of-image marker
    write_concepts({"normal": ["clear lungs", "sharp diaphragm", "no opacity"]}, tmp_path / "partial.json")
    argv = ["reproduce", "--preset", "chest-xray", "--model", "data/mini-llava", "--retriever", retriever,
            "--data-root", str(root), "--set", f"concepts={tmp_path / 'partial.json'}"]
    code, err, _ = run_cli(argv, tmp_path / "run", capsys)
    assert code == 2 and len(err) == 3, err
    n_pneu = sum(r.label == "pneumonia" for r in recs)
    assert f"selfsynth: preflight: data: label 'pneumonia' ({n_pneu} images) has no concepts in {tmp_path / 'partial.json'}" in err
    assert f"selfsynth: preflight: data: corrupt image {bad[0].image} (id {bad[0].id}): " in "\n".join(err)
    assert f"selfsynth: preflight: data: corrupt image {bad[1].image} (id {bad[1].id}): truncated JPEG" in "\n".join(err)


def test_unreachable_judge_endpoint(tmp_path, capsys, monkeypatch):
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()  # nobody listens
    monkeypatch.setenv("SELFSYNTH_LLM_BASE_URL", f"http://127.0.0.1:{port}/v1"); monkeypatch.setenv("SELFSYNTH_LLM_MODEL", "judge")
    code, err, took = run_cli(["reproduce", "--preset", "quick", "--set", "judge=llm"], tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1 and took < 20, (err, took)
    assert err[0].startswith(f"selfsynth: preflight: judge=llm: LLM endpoint http://127.0.0.1:{port}/v1/chat/completions "
                             "failed for the preflight check after 1 attempt ") and "Connection refused" in err[0]
    monkeypatch.delenv("SELFSYNTH_LLM_MODEL")
    code, err, _ = run_cli(["round", "--preset", "quick", "--round", "0", "--set", "judge=llm"], tmp_path / "run", capsys)
    assert code == 2 and err == ["selfsynth: preflight: judge=llm: no LLM endpoint configured: set SELFSYNTH_LLM_MODEL "
                                 "(and SELFSYNTH_LLM_API_KEY if it needs a key)"]


def test_every_problem_at_once_and_report_checks_less(tmp_path, capsys):
    argv = ["--preset", "quick", "--model", str(tmp_path / "nope"), "--retriever", str(tmp_path / "nope2"),
            "--set", "tune_launch=no-such-launcher --config_file nope.yaml"]
    code, err, _ = run_cli(["reproduce"] + argv, tmp_path / "run", capsys)
    assert code == 2 and [e.split(": ")[2] for e in err] == ["model", "retriever", "tune_launch", "tune_launch"], err
    code, err, _ = run_cli(["report"] + argv, tmp_path / "run", capsys)
    assert code == 2 and [e.split(": ")[2] for e in err] == ["model", "retriever"], err
    code, err, _ = run_cli(["theory"] + argv, tmp_path / "run", capsys)
    assert code == 2 and [e.split(": ")[2] for e in err] == ["retriever"], err


def test_run_dir_rules_match_the_store(tmp_path):
    (tmp_path / "full").mkdir(); (tmp_path / "full" / "x.txt").write_text("x")
    assert run_dir_problems(preset("quick", run_dir=str(tmp_path / "full"))) == \
        [f"run dir {tmp_path / 'full'} is not empty and has no config.json: not a selfsynth run"]
    assert run_dir_problems(preset("quick", run_dir=str(tmp_path / "a" / "b"))) == []


def test_safetensors_cut_short(tmp_path):
    good = (MINI / "model.safetensors").read_bytes()
    assert safetensors_problem(MINI / "model.safetensors") is None
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    assert "cut short" in safetensors_problem(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    assert "header" in safetensors_problem(tmp_path / "junk.safetensors")
