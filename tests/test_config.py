import json
import pytest
from selfsynth.config import (RunConfig, ConfigError, PRESETS, DATASETS, preset, parse_value, apply_overrides,
                              save_config, load_config, field_docs)
from selfsynth.cli import main


def test_every_preset_is_valid_and_paper_presets_carry_paper_hyperparameters():
    assert set(PRESETS) == {"mini", "quick", *[d for d in DATASETS if d != "mini"]}
    for name in PRESETS: preset(name)
    cub = preset("cub-200")
    assert (cub.dataset, cub.lora_r, cub.lora_alpha, cub.lr, cub.epochs, cub.batch_size) == ("cub-200", 128, 256, 1e-5, 2, 32)
    assert (cub.describe_prompts * cub.describe_samples, cub.select_std, cub.select_min, cub.rounds) == (30, 0.4, 3, 4)
    assert (cub.rs_queries, cub.rs_samples, cub.rs_temperature, cub.rs_top_p) == (8, 3, 0.7, 0.6)
    assert preset("mini").dataset == "mini" and preset("chest-xray").model != preset("cub-200").model


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    cfg = preset("quick", tau=0.01, methods=("ours", "nl"), max_train_images=5)
    assert load_config(save_config(cfg, tmp_path / f"c{suffix}")) == cfg


def test_every_field_is_documented():
    docs = field_docs()
    assert all(docs.get(f) for f in RunConfig.__dataclass_fields__)


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(preset(), ["tau=0.01", "rounds=2", "augment=no", "max_train_images=none", "methods=ours,lge"])
    assert (cfg.tau, cfg.rounds, cfg.augment, cfg.max_train_images, cfg.methods) == (0.01, 2, False, None, ("ours", "lge"))


@pytest.mark.parametrize("sets,msg", [(["rounds=two"], "'rounds' expects int"), (["nope=1"], "unknown config key 'nope'"),
                                      (["methods=ours,bogus"], "unknown ['bogus']"), (["tau"], "key=value")])
def test_bad_overrides_name_the_key(sets, msg):
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")): apply_overrides(preset(), sets)


def test_bad_config_file_names_the_file(tmp_path):
    p = tmp_path / "c.json"; p.write_text(json.dumps({"tau": 0.1, "colour": "red"}))
    with pytest.raises(ConfigError, match=f"{p}.*unknown config key 'colour'"): load_config(p)


@pytest.mark.parametrize("argv,msg", [
    (["report", "--preset", "nope"], "unknown preset 'nope'"),
    (["report", "--preset", "quick", "--set", "colour=red"], "unknown config key 'colour'"),
    (["report", "--preset", "quick", "--set", "rounds=x"], "'rounds' expects int"),
])
def test_cli_config_errors_exit_2_in_one_line_and_touch_nothing(tmp_path, capsys, argv, msg):
    run = tmp_path / "run"
    assert main(argv + ["--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and not run.exists()


def test_cli_refuses_a_run_dir_of_another_config(tmp_path, capsys):
    run = tmp_path / "run"; run.mkdir(); save_config(preset("quick", run_dir=str(run), seed=1), run / "config.json")
    before = (run / "config.json").read_text()
    assert main(["report", "--preset", "quick", "--run-dir", str(run)]) == 2
    assert "belongs to a different config (seed" in capsys.readouterr().err
    assert (run / "config.json").read_text() == before and sorted(p.name for p in run.iterdir()) == ["config.json"]




def test_every_sampling_stage_is_keyed_by_what_changes_its_samples():
    "The cache keys' field lists are kept by hand: a stage that samples from a model must name model, seed and dtype, and one that samples at a temperature also how it draws."
    from selfsynth.describe import DESCRIBE_FIELDS
    from selfsynth.synthesize import SYNTH_FIELDS
    from selfsynth.rejection import RS_FIELDS
    from selfsynth.evaluate import EVAL_FIELDS
    from selfsynth.tune import TUNE_FIELDS
    from selfsynth.config import RunConfig
    from dataclasses import fields
    known = {f.name for f in fields(RunConfig)}
    for name, fs in dict(describe=DESCRIBE_FIELDS, synthesize=SYNTH_FIELDS, rejection=RS_FIELDS, eval=EVAL_FIELDS, tune=TUNE_FIELDS).items():
        assert set(fs) <= known, f"{name}: unknown config fields {set(fs) - known}"
        assert {"seed", "dtype"} <= set(fs), f"{name}: seed and dtype change the result but are not in its key"
    for fs in (DESCRIBE_FIELDS, SYNTH_FIELDS, EVAL_FIELDS): assert "model" in fs  # rejection and tune name the model as an input
    for name, fs in dict(describe=DESCRIBE_FIELDS, synthesize=SYNTH_FIELDS, rejection=RS_FIELDS).items():
        assert {"gen_backend", "gen_draw"} <= set(fs), f"{name}: the cascade's top-k draw samples otherwise than the exact draw"
