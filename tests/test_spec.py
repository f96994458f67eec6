"""The run specification: one object for every run, addressed by dotted names, read from files and flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnbench.core.errors import UsageError
from cnnbench.spec.run import NAMES, OPTIONS, RunSpec, base_for, load_file, resolve

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_dotted_names_address_every_section_and_nested_field():
    spec = RunSpec().with_values({"train.lr": 0.05, "data.size": 28, "model.head.units": 512, "model.name": "fit:7500"})
    assert spec.get("train.lr") == 0.05 and spec.train.lr == 0.05
    assert spec.data.size == 28 and spec.model.head.units == 512 and spec.model_name == "fit:7500"
    assert {"train.lr", "data.size", "model.head.units", "model.freeze", "kind"} <= set(NAMES)
    assert spec.flat()["model.head.units"] == 512


def test_every_field_is_an_option_and_every_option_a_field():
    assert {o.name for o in OPTIONS} | {"kind"} == set(NAMES)


def test_a_sectioned_toml_file_holds_data_model_and_training(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\ndataset = "digits"\nsize = 28\nsplit = [0.6, 0.2, 0.2]\n'
                    '[model]\nname = "mnist-722"\ndropout = 0.1\n[model.head]\nunits = 64\n'
                    '[train]\nlr = 0.01\nepochs = 3\n')  # fmt: skip
    spec = resolve({"train.epochs": 5}, path)
    assert (spec.data.size, spec.data.split, spec.model.name, spec.model.dropout) == (28, (0.6, 0.2, 0.2), "mnist-722", 0.1)
    assert spec.model.head.units == 64 and spec.train.lr == 0.01
    assert spec.train.epochs == 5  # a flag beats the file


def test_json_files_take_nested_sections_or_dotted_keys(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"train": {"lr": 0.2}, "data.size": 32, "model.head.units": 7}))
    spec = resolve({}, path)
    assert (spec.train.lr, spec.data.size, spec.model.head.units) == (0.2, 32, 7)


def test_a_flat_file_of_training_options_still_works(tmp_path):
    """The format before sections: training options at the top level, with model, dropout and init among them."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"model": "mnist-722", "dropout": 0.2, "init": "he", "lr": 0.3, "epochs": 2}))
    spec = resolve({}, path)
    assert (spec.model.name, spec.model.dropout, spec.model.init, spec.train.lr) == ("mnist-722", 0.2, "he", 0.3)


@pytest.mark.parametrize("content, named", [
    ('[train]\nlearning_rate = 0.1\n', "train.learning_rate"),
    ('[data]\nsize = "big"\n', "data.size"),
    ('[model.head]\nunits = 0\n', "--units"),
    ('[train]\nlr = -1.0\n', "--lr"),
    ('[trian]\nlr = 0.1\n', "trian.lr"),
])  # fmt: skip
def test_a_bad_entry_in_a_file_is_named(tmp_path, content, named):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(UsageError, match=named.replace(".", r"\.")):
        resolve({}, path)


def test_a_file_that_is_not_utf8_is_a_usage_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[train]\naugment = "flip" # caf\xe9\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="UTF-8"):
        load_file(path)


def test_the_data_seed_follows_the_training_seed_unless_given():
    assert resolve({"train.seed": 4}).data.seed == 4
    assert resolve({"train.seed": 4, "data.seed": 1}).data.seed == 1


def test_finetune_starts_from_its_own_base():
    assert base_for("finetune").train.reg_layers == "head.*"
    assert resolve({}, base=base_for("finetune")).kind == "finetune"
    assert resolve({"train.reg_layers": "*"}, base=base_for("finetune")).train.reg_layers == "*"


def test_a_spec_round_trips_through_json():
    spec = resolve({"model.name": "fit:3000", "train.lr": 0.02, "data.split": "0.7,0.1,0.2", "model.head.kind": "linear"})
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_specifications_are_valid(path):
    spec = resolve({}, path, base=base_for(load_file(path).get("kind", "train")))
    assert spec.model.name and spec.data.dataset


def test_cli_config_file_with_sections_and_flags(cli, data_root, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[data]\ndataset = "digits"\nsize = 28\n[model]\nname = "mnist-722"\n[train]\nepochs = 1\nlr = 0.01\n')
    result = cli("train", "--config", path, "--root", data_root, "--lr", "0.02", "--out", tmp_path / "runs", "--json",
                 "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    config = json.loads((Path(result.json()["run_dir"]) / "config.json").read_text())
    assert config["spec"]["train"]["lr"] == 0.02 and config["spec"]["data"]["size"] == 28
    assert config["model"]["name"] == "mnist-722"


def test_cli_unknown_option_in_a_config_file_is_one_line(cli, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[train]\nlrate = 0.1\n")
    result = cli("train", "--config", path)
    assert result.code == 2 and "train.lrate" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_help_shows_every_default_and_no_bool_metavar(cli):
    out = cli("train", "--help").out
    assert "[default: 128]" in out and "[default: adam]" in out and "[default: (digits" in out
    assert "<bool>" not in out
