"""activeseg.config: defaults → TOML file → overrides, typed, with errors naming the key."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from activeseg.config import SimConfig, TrainConfig, help_of, load_config, strategy_list


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == SimConfig()
    assert (cfg.steps, cfg.rounds, cfg.strategy, cfg.strategy_options) == (SimConfig.steps, 8, "bald", {})


def test_flat_toml(tmp_path):
    cfg = load_config(write(tmp_path, 'rounds = 3\nstrategy = "random"\nlr = 0.01\nmax_pool = 50\naugment = false\n'))
    assert (cfg.rounds, cfg.strategy, cfg.lr, cfg.max_pool, cfg.augment) == (3, "random", 0.01, 50, False)
    assert cfg.query == SimConfig().query  # untouched keys keep their defaults


def test_simulate_table(tmp_path):
    cfg = load_config(write(tmp_path, '[simulate]\nrounds = 2\nquery = 7\nestimator = "ensemble"\n'))
    assert (cfg.rounds, cfg.query, cfg.estimator) == (2, 7, "ensemble")


def test_strategy_table_with_simulate_table(tmp_path):
    path = write(tmp_path, '[simulate]\nstrategy = "density_weighted"\n\n[strategy]\nbeta = 2.0\nreduction = "max"\n')
    cfg = load_config(path)
    assert cfg.strategy == "density_weighted"
    assert cfg.strategy_options == {"beta": 2.0, "reduction": "max"}


def test_strategy_table_in_flat_file(tmp_path):
    cfg = load_config(write(tmp_path, 'rounds = 4\n\n[strategy]\ncandidates = 12\n'))
    assert cfg.rounds == 4
    assert cfg.strategy == SimConfig().strategy  # the table does not rename the strategy
    assert cfg.strategy_options == {"candidates": 12}


def test_strategy_table_must_be_a_table(tmp_path):
    with pytest.raises(ValueError, match=r"\[strategy\] must be a table"):
        load_config(write(tmp_path, 'strategy = "bald"\n[simulate]\nrounds = 2\n'))


def test_overrides_beat_file_and_none_is_ignored(tmp_path):
    path = write(tmp_path, "rounds = 3\nquery = 5\n")
    cfg = load_config(path, rounds=9, query=None, seed=None)
    assert cfg.rounds == 9  # override wins over the file
    assert cfg.query == 5  # None override leaves the file's value
    assert cfg.seed == 0  # None override leaves the default


def test_string_overrides_are_coerced():
    cfg = load_config(None, rounds="4", lr="0.5", max_pool="10", dropout="0")
    assert (cfg.rounds, cfg.lr, cfg.max_pool, cfg.dropout) == (4, 0.5, 10, 0.0)
    assert isinstance(cfg.rounds, int) and isinstance(cfg.lr, float)


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("on", True), ("TRUE", True), ("1", True),
                                                 ("off", False), ("no", False), ("False", False), ("0", False)])
def test_bool_strings(text, expected):
    assert load_config(None, augment=text).augment is expected
    assert load_config(None, no_delete=text).no_delete is expected


def test_bad_bool_string_names_key():
    with pytest.raises(ValueError, match=r"'augment' = 'maybe' is not a valid bool"):
        load_config(None, augment="maybe")


def test_bad_type_names_key(tmp_path):
    with pytest.raises(ValueError, match=r"config key 'rounds' = 'many' is not a valid int"):
        load_config(write(tmp_path, 'rounds = "many"\n'))
    with pytest.raises(ValueError, match=r"'lr'"):
        load_config(None, lr="fast")
    with pytest.raises(ValueError, match=r"'strategy_options'"):
        load_config(None, strategy_options="beta=2")


def test_unknown_keys_listed(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['bogus', 'roundz'\]") as err:
        load_config(write(tmp_path, "roundz = 3\nbogus = 1\n"))
    assert "valid keys:" in str(err.value) and "rounds" in str(err.value)
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        load_config(None, nope=1)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_names_file(tmp_path):
    path = write(tmp_path, "rounds = = 3\n", name="broken.toml")
    with pytest.raises(ValueError, match=r"broken\.toml is not valid TOML"):
        load_config(path)


def test_simconfig_extends_trainconfig():
    assert issubclass(SimConfig, TrainConfig)
    train_names = [f.name for f in dataclasses.fields(TrainConfig)]
    sim_names = [f.name for f in dataclasses.fields(SimConfig)]
    assert sim_names[: len(train_names)] == train_names
    assert "rounds" in sim_names and "rounds" not in train_names


def test_train_config_is_plain_and_exact():
    cfg = SimConfig(steps=7, lr=0.02, batch_size=3, augment=False, checkpoint="last", rounds=99, strategy="random")
    train = cfg.train_config()
    assert type(train) is TrainConfig
    assert [f.name for f in dataclasses.fields(train)] == [f.name for f in dataclasses.fields(TrainConfig)]
    assert train == TrainConfig(steps=7, lr=0.02, batch_size=3, augment=False, checkpoint="last")
    assert not hasattr(train, "rounds")


def test_every_field_has_help():
    missing = [f.name for f in dataclasses.fields(SimConfig) if not help_of(f).strip()]
    assert missing == []


def test_replace_and_json_round_trip():
    cfg = SimConfig().replace(query=3, strategy_options={"beta": 2.0})
    assert cfg.query == 3 and cfg.strategy_options == {"beta": 2.0}
    import json

    assert load_config(None, **json.loads(cfg.to_json())) == cfg


def test_strategy_list():
    assert strategy_list("random, bald,") == ["random", "bald"]
    assert strategy_list("bald") == ["bald"]
    assert strategy_list(" , ") == []


def test_steps_for_by_hand():
    assert TrainConfig(steps=150).steps_for(1000) == 150  # no epochs: fixed steps
    cfg = TrainConfig(steps=100, min_steps=10, epochs=2.0, batch_size=8)
    assert cfg.steps_for(20) == 10  # ceil(2 * 20 / 8) = 5 -> raised to min_steps
    assert cfg.steps_for(100) == 25  # ceil(2 * 100 / 8) = 25
    assert cfg.steps_for(101) == 26  # ceil(25.25) = 26
    assert cfg.steps_for(1000) == 100  # 250 -> capped at steps


def test_weight_decay_for_by_hand():
    assert TrainConfig(weight_decay=0.5).weight_decay_for(10) == 0.5
    per_item = TrainConfig(weight_decay=0.25, weight_decay_rule="per_item")
    assert per_item.weight_decay_for(10) == pytest.approx(0.025)
    assert per_item.weight_decay_for(0) == pytest.approx(0.25)  # N clipped to 1
    with pytest.raises(ValueError, match="weight_decay_rule 'bogus'"):
        TrainConfig(weight_decay_rule="bogus").weight_decay_for(5)


def test_cli_import_does_not_import_torch():
    code = "import sys, activeseg.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_saved_config_without_the_new_keys_runs_as_it_ran():
    from activeseg.config import LEGACY, from_saved

    old = json.loads(SimConfig().to_json())
    for key in LEGACY:
        old.pop(key, None)
    old.update(steps=150, checkpoint="best", epochs=None, dataset="nuclei")
    cfg = from_saved(old)
    assert (cfg.optimizer, cfg.lr_schedule, cfg.ema_decay, cfg.norm, cfg.augment_style) == (
        "adam", "constant", 0.0, "batch", "affine")
    assert cfg.epochs is None and cfg.dataset == "nuclei_grouped"  # None kept; the old nuclei grouping
    assert from_saved(json.loads(SimConfig().to_json())) == SimConfig()  # a config of today is unchanged


def test_none_for_an_optional_setting():
    assert load_config(epochs="none").epochs is None


def test_query_schedule():
    cfg = SimConfig(query=3, query_schedule="2x4,4")
    assert [cfg.query_at(r) for r in range(1, 8)] == [2, 2, 2, 2, 4, 4, 4]
    assert SimConfig(query=3).query_at(5) == 3
    assert [SimConfig(query_schedule="1x1,2x2,8").query_at(r) for r in range(1, 6)] == [1, 2, 2, 8, 8]
    with pytest.raises(ValueError, match="'ax2' is not Q or QxR"):
        SimConfig(query_schedule="ax2,4").query_at(1)
    with pytest.raises(ValueError, match="only the last part may omit xR"):
        SimConfig(query_schedule="2,4").query_at(1)


def test_the_reference_gets_its_own_budget():
    cfg = SimConfig(steps=100, min_steps=10, epochs=2.0, batch_size=8, reference_epochs=40.0)
    ref = cfg.reference_config(200)
    assert ref.steps_for(200) == 1000 and ref.steps_for(5) == 1000  # 40 × 200 / 8, fixed whatever N
    assert SimConfig(steps=100, min_steps=10, epochs=2.0, reference_epochs=None).reference_config(200).steps_for(200) \
        == 50  # none: the rounds' schedule
    assert SimConfig(steps=5000, min_steps=3000, epochs=None, batch_size=8).reference_config(16).steps_for(16) == 5000
