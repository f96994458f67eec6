"""`cnnbench finetune`: ImageNet weights from torch's cache (offline), freezing policies, BatchNorm freezing, cached
backbone features, two-phase fine-tuning, transfer from our own runs, and the errors a user can make.

No test touches the network: ImageNet "weights" are random torchvision state dicts written where torch's hub cache
keeps the real files, with one tensor set to a known value so loading them can be checked bit for bit.
"""

from __future__ import annotations

import json
import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnbench.data.prepare import PrepareOptions
from cnnbench.core.errors import UsageError
from cnnbench.models import InputSpec, ModelSpec, build
from cnnbench.models.transfer import apply_freeze, build_transfer, imagenet_weights_path, parse_head, resolve_backbone
from cnnbench.runs.rundir import RunDir
from cnnbench.runs.kinds import run as run_spec
from tests.helpers import MNIST7498, finetune_spec

DIGITS32 = ["--dataset", "digits", "--size", "32"]
RGB32 = InputSpec(channels=3, height=32, width=32, num_classes=10)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SQUEEZENET_BACKBONE = 722_496  # squeezenet1_1's features
SQUEEZENET_LINEAR_HEAD = 512 * 10 + 10  # 512 channels -> 10 digits
FIRE_11_12 = 386_176  # squeezenet1_1's last two Fire modules (features.11, features.12)


# --- helpers ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """torch's hub cache moved into tmp_path (restored afterwards), with every download refused as if offline."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored by monkeypatch at teardown
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    return tmp_path / "hub"


def torchvision_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision model's state dict with seeded random weights and non-trivial BatchNorm statistics."""
    from torchvision import models

    torch.manual_seed(seed)
    model = models.get_model(name, weights=None)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_imagenet_file(name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    state = torchvision_state(name)
    first = next(k for k in state if k.endswith("weight"))
    state[first].fill_(0.0123)  # a value no initialiser produces: proves this file is what got loaded
    path = imagenet_weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


def backbone_of(checkpoint_model: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fine-tune checkpoint's backbone tensors under torchvision's names."""
    return {k[len("backbone.") :]: v for k, v in checkpoint_model.items() if k.startswith("backbone.")}


def trainable_modules(model: nn.Module) -> set[str]:
    """Backbone modules (two name levels, e.g. features.11 or layer3.0) holding a trainable parameter."""
    return {".".join(n.split(".")[:2]) for n, p in model.backbone.named_parameters() if p.requires_grad}


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err
    assert lines[0].startswith("cnnbench: error: ")
    return lines[0]


def finetune_args(data_root: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["finetune", *DIGITS32, "--root", data_root, "--out", out, "--quiet", "--json", *extra]


# --- 1. ImageNet weights from torch's cache ---------------------------------------------------------------------------


def test_imagenet_weights_load_from_the_torch_cache_without_network(cli, data_root, hub, tmp_path):
    path, state = write_imagenet_file("squeezenet1_1")
    assert path == hub / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"  # torchvision's own file name and folder
    result = cli(*finetune_args(data_root, tmp_path / "runs", "--backbone", "squeezenet1_1", "--epochs", "2"))
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    run = RunDir(Path(summary["run_dir"]))
    config = run.config()
    assert config["kind"] == "finetune"
    assert config["finetune"]["weights"]["source"] == "imagenet"
    assert config["finetune"]["weights"]["file"] == str(path)
    assert config["finetune"]["backbone"] == "squeezenet1_1" and config["finetune"]["freeze"] == "all"
    assert config["normalization"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert config["normalization"]["std"] == pytest.approx(IMAGENET_STD)
    assert summary["params"]["trainable"] == SQUEEZENET_LINEAR_HEAD
    assert summary["params"]["frozen"] == SQUEEZENET_BACKBONE

    # The frozen backbone after training is the file, bit for bit; the head trained.
    last = run.load_checkpoint("last")["model"]
    body = backbone_of(last)
    expected = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert set(body) == set(expected)
    for key, value in expected.items():
        assert torch.equal(body[key], value), key
    assert torch.all(body["features.0.weight"] == 0.0123)
    assert not any(k.startswith("classifier.") for k in backbone_of(last))


def test_missing_imagenet_file_exits_2_naming_the_file_and_folder(cli, data_root, hub, tmp_path):
    result = cli(*finetune_args(data_root, tmp_path / "runs", "--backbone", "squeezenet1_1", "--epochs", "1"))
    assert result.code == 2
    line = one_error_line(result.err)
    assert "squeezenet1_1-b8a52dc0.pth" in line
    assert str(hub / "checkpoints") in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left behind


# --- 2. freezing policies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "policy", "modules", "count"),
    [
        ("squeezenet1_1", "last:2", {"features.11", "features.12"}, FIRE_11_12),
        ("squeezenet1_1", "all", set(), 0),
        ("squeezenet1_1", "from:features.12", {"features.12"}, 197_184),
        # S4's Keras MobileNetV2 block_16 is torchvision's features.17; features.18 is the last 1x1 conv (1280)
        ("mobilenet_v2", "from:features.17", {"features.17", "features.18"}, 886_080),
    ],
)
def test_freeze_policies_train_the_named_blocks_and_the_head(backbone, policy, modules, count):
    head = parse_head("linear").to_dict()
    model = build(ModelSpec(name=backbone, input=RGB32, options={"head": head, "freeze": policy, "freeze_bn": False}))
    assert trainable_modules(model) == modules
    assert trainable(model.backbone) == count
    assert all(p.requires_grad for p in model.head.parameters())


def test_freeze_none_trains_everything():
    model = build_transfer(RGB32, backbone="squeezenet1_1", head=parse_head("linear").to_dict())
    apply_freeze(model, "all")
    apply_freeze(model, "none")  # policies are absolute, not cumulative
    assert trainable(model.backbone) == SQUEEZENET_BACKBONE
    assert trainable(model) == SQUEEZENET_BACKBONE + SQUEEZENET_LINEAR_HEAD


def test_fraction_policy_unfreezes_from_the_middle_onwards():
    model = build_transfer(RGB32, backbone="resnet18", head=parse_head("linear").to_dict())
    apply_freeze(model, "fraction:2")
    flags = [p.requires_grad for p in model.backbone.parameters()]
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 0 < trainable(model.backbone) < total
    first = flags.index(True)
    assert 0 < first and all(flags[first:]), "fraction:X must leave one contiguous trainable tail"
    # half of the parameterised layers are frozen: the stem, layer1 and layer2 stay fixed, layer3 onwards train
    assert trainable_modules(model) == {"layer3.0", "layer3.1", "layer4.0", "layer4.1"}
    # fraction:X unfreezes from layer n_layers / X on (S3): a larger X unfreezes more, X = 1 nothing
    apply_freeze(model, "fraction:1.05")
    assert 0 < trainable(model.backbone) < trainable_count_at(model, "fraction:2")
    apply_freeze(model, "fraction:1")
    assert trainable(model.backbone) == 0


def trainable_count_at(model: nn.Module, policy: str) -> int:
    probe = build_transfer(RGB32, backbone=model.backbone.entry.name, head=parse_head("linear").to_dict())
    apply_freeze(probe, policy)
    return trainable(probe.backbone)


def test_finetune_json_reports_trainable_and_frozen_counts_and_frozen_blocks_stay_put(cli, data_root, tmp_path):
    state = torchvision_state("squeezenet1_1", seed=1)
    weights = tmp_path / "squeeze.pth"
    torch.save(state, weights)
    result = cli(*finetune_args(data_root, tmp_path / "runs", "--backbone", "squeezenet1_1", "--weights", weights,
                                "--freeze", "last:2", "--epochs", "1", "--lr", "3e-3"))  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["params"]["trainable"] == FIRE_11_12 + SQUEEZENET_LINEAR_HEAD
    assert summary["params"]["frozen"] == SQUEEZENET_BACKBONE - FIRE_11_12
    run = RunDir(Path(summary["run_dir"]))
    assert run.config()["params"]["trainable"] == summary["params"]["trainable"]
    assert run.config()["finetune"]["weights"] == {"source": str(weights), "file": str(weights.resolve())}
    body = backbone_of(run.load_checkpoint("last")["model"])
    for key, value in body.items():
        same = torch.equal(value, state[key])
        if key.startswith(("features.11.", "features.12.")):
            assert not same, f"{key} is in an unfrozen block but did not train"
        else:
            assert same, f"{key} is frozen but changed"


# --- 3. --freeze-bn ---------------------------------------------------------------------------------------------------


def test_freeze_bn_keeps_every_batchnorm_exact_while_convolutions_train(cli, data_root, tmp_path):
    state = torchvision_state("mobilenet_v3_small", seed=2)
    weights = tmp_path / "mnv3.pth"
    torch.save(state, weights)
    args = ["--backbone", "mobilenet_v3_small", "--weights", weights, "--freeze", "none", "--freeze-bn"]
    result = cli(*finetune_args(data_root, tmp_path / "runs", *args, "--epochs", "1", "--lr", "3e-3"))
    assert result.code == 0, result.err
    run = RunDir(Path(result.json()["run_dir"]))
    assert run.config()["finetune"]["freeze_bn"] is True
    model = build(ModelSpec.from_dict(run.config()["model"]))
    bn_names = [n for n, m in model.backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    conv_names = [n for n, m in model.backbone.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(bn_names) > 20 and len(conv_names) > 20
    body = backbone_of(run.load_checkpoint("last")["model"])
    for name in bn_names:
        for tensor in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"{name}.{tensor}"
            assert torch.equal(body[key], state[key]), f"{key} changed under --freeze-bn"
    changed = [n for n in conv_names if not torch.equal(body[f"{n}.weight"], state[f"{n}.weight"])]
    assert len(changed) > len(conv_names) // 2, "with --freeze none the convolutions must train"
    # the count: everything but BatchNorm's affine parameters trains
    bn_params = sum(state[f"{n}.weight"].numel() + state[f"{n}.bias"].numel() for n in bn_names)
    assert run.config()["params"]["frozen"] == bn_params


# --- 4. cached backbone features --------------------------------------------------------------------------------------


def test_cached_and_live_frozen_backbones_train_the_same_head(data_root, tmp_path, caplog):
    """On the CPU in fp32, where equal is exact; on an H200 in bf16 the two heads differed beyond 1e-5 after two epochs
    (bf16 rounding of the features the two paths feed the head; not investigated further)."""
    state = torchvision_state("resnet18", seed=3)  # BatchNorm with non-trivial running statistics
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    data = PrepareOptions(dataset="digits", root=data_root, size=32)
    caplog.set_level(logging.INFO, logger="cnnbench")
    runs, logs = {}, {}
    for cache in (True, False):
        caplog.clear()
        config = finetune_spec(data, backbone="resnet18", weights=str(weights), freeze="all", epochs=2, batch_size=64,
                               lr=3e-3, seed=5, cache_features=cache, device="cpu")  # fmt: skip
        result = run_spec(config, out=tmp_path / f"cache-{cache}")
        logs[cache] = list(caplog.messages)
        assert result.status == "completed"
        runs[cache] = result.run
    assert any("features computed once" in line for line in logs[True])
    assert not any("features computed once" in line for line in logs[False])
    assert runs[True].config()["train"]["cache_features"] is True
    assert runs[False].config()["train"]["cache_features"] is False

    cached, live = (runs[c].load_checkpoint("last")["model"] for c in (True, False))
    head_keys = [k for k in cached if k.startswith("head.")]
    initial = initial_state(runs[True])
    assert head_keys
    for key in head_keys:
        assert torch.allclose(cached[key], live[key], atol=1e-5), key
        assert not torch.allclose(cached[key], initial[key], atol=1e-3), f"{key} did not train"
    # Training through the frozen backbone live left it (BatchNorm statistics included) exactly as loaded.
    for key, value in backbone_of(live).items():
        assert torch.equal(value, state[key]), key
    val = {c: [r["val_loss"] for r in runs[c].metrics()] for c in (True, False)}
    assert len(val[True]) == 2
    assert val[True] == pytest.approx(val[False], rel=1e-5)


def initial_state(run: RunDir) -> dict[str, torch.Tensor]:
    """The model as built under the run's seed, before training (its head is what training started from)."""
    from cnnbench.runs.pipeline import seed_everything

    seed_everything(run.config()["train"]["seed"], False)
    return build(ModelSpec.from_dict(run.config()["model"])).state_dict()


# --- 5. end to end on generated images --------------------------------------------------------------------------------


def test_from_scratch_finetune_on_a_folder_of_jpegs_evaluates_and_reports(cli, tmp_path):
    from tests.fixtures_formats import write_jpeg

    tree = tmp_path / "tree"
    for class_index, name in enumerate(("cat", "dog")):
        for i in range(14):
            write_jpeg(tree / name / f"{i}.jpg", seed=100 * class_index + i, size=24)
    runs = tmp_path / "runs"
    result = cli("finetune", "--backbone", "squeezenet1_1", "--weights", "none", "--init", "glorot", "--head",
                 "mlp:16,8", "--freeze", "none", "--dataset", f"folder:{tree}", "--size", "32", "--root",
                 tmp_path / "data", "--epochs", "2", "--batch-size", "8", "--out", runs,
                 "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    run = Path(summary["run_dir"])
    config = RunDir(run).config()
    assert config["kind"] == "finetune"
    assert config["finetune"]["weights"] == {"source": "none", "init": "glorot"}
    assert config["finetune"]["head"]["kind"] == "mlp" and config["finetune"]["head"]["widths"] == [16, 8]
    assert config["normalization"]["source"] == "train split statistics"  # no ImageNet weights, no ImageNet stats
    # mlp:16,8 on squeezenet's 512 channels, one sigmoid logit for two classes: 8,208 + 136 + 9
    assert summary["params"]["trainable"] == SQUEEZENET_BACKBONE + 8_353 and summary["params"]["frozen"] == 0

    evaluated = cli("evaluate", run, "--split", "val", "--json")
    assert evaluated.code == 0, evaluated.err
    scores = evaluated.json()
    assert scores["num_classes"] == 2 and scores["n"] > 0 and 0.0 <= scores["accuracy"] <= 1.0
    assert (run / "eval" / "val.json").is_file()

    reported = cli("report", runs, "--columns", "run,kind,backbone,weights,head,units,freeze", "--out",
                   tmp_path / "report", "--json")  # fmt: skip
    assert reported.code == 0, reported.err
    rows = reported.json()["rows"]
    assert rows == [{"run": run.name, "kind": "finetune", "backbone": "squeezenet1_1", "weights": "none",
                     "head": "mlp", "units": "16,8", "freeze": "none"}]  # fmt: skip


# --- 6. two phases ----------------------------------------------------------------------------------------------------


def test_head_epochs_make_a_parent_head_run_then_a_fine_tune(cli, data_root, tmp_path):
    runs = tmp_path / "runs"
    result = cli(*finetune_args(data_root, runs, "--backbone", "squeezenet1_1", "--weights", "none", "--head-epochs",
                                "1", "--freeze", "last:1", "--epochs", "1"))  # fmt: skip
    assert result.code == 0, result.err
    second = Path(result.json()["run_dir"])
    dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(dirs) == 2 and second in dirs
    first = next(p for p in dirs if p != second)
    first_config, second_config = RunDir(first).config(), RunDir(second).config()
    assert second_config["parent"] == str(first)
    assert "parent" not in first_config
    assert first_config["finetune"]["freeze"] == "all"
    assert first_config["kind"] == second_config["kind"] == "finetune"
    assert second_config["finetune"]["freeze"] == "last:1"
    assert second_config["finetune"]["weights"]["source"] == f"run:{first}"
    assert second_config["finetune"]["weights"]["reinitialised"] == []
    assert second_config["normalization"] == first_config["normalization"]
    assert second_config["params"]["trainable"] == 197_184 + SQUEEZENET_LINEAR_HEAD  # Fire 12 + head
    # Phase 2 starts from phase 1's trained head and keeps everything before Fire 12 as phase 1 left it.
    parent_best = RunDir(first).load_checkpoint("best")["model"]
    child = RunDir(second).load_checkpoint("last")["model"]
    for key, value in backbone_of(child).items():
        if not key.startswith("features.12."):
            assert torch.equal(value, parent_best[f"backbone.{key}"]), key


# --- 7. transfer from our own run -------------------------------------------------------------------------------------


@pytest.fixture
def digits_run(trained_run) -> Path:
    """A trained mnist-7498 run on the ten digits (head: dropout, Dense 32, Dense 10): the session's shared run, which
    fine-tuning only reads."""
    return trained_run(**MNIST7498)


def test_finetune_from_our_own_run_to_another_class_count(cli, data_root, digits_run, tmp_path):
    result = cli("finetune", "--weights", f"run:{digits_run}", "--dataset", "digits", "--size", "28", "--classes",
                 "5", "--root", data_root, "--epochs", "2", "--no-cache-features", "--out", tmp_path, "--json",
                 "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    run = RunDir(Path(summary["run_dir"]))
    config = run.config()
    parent = RunDir(digits_run)
    assert config["kind"] == "finetune" and config["parent"] == str(digits_run)
    assert config["model"]["name"] == "mnist-7498" and config["model"]["input"]["num_classes"] == 5
    weights = config["finetune"]["weights"]
    assert weights["source"] == f"run:{digits_run}"
    assert weights["reinitialised"] == ["head.2.bias", "head.2.weight"]  # only the last Dense: 10 -> 5 classes
    parent_best = parent.load_checkpoint("best")["model"]
    assert weights["loaded"] == len(parent_best) - 2
    assert config["normalization"] == parent.config()["normalization"]
    child = run.load_checkpoint("last")["model"]
    assert child["head.2.weight"].shape == (5, 32)
    for key, value in child.items():
        if key.startswith("features."):  # frozen (the default policy): the parent's, statistics included
            assert torch.equal(value, parent_best[key]), key
    assert not torch.equal(child["head.1.weight"], parent_best["head.1.weight"])  # loaded, then trained
    # features frozen (6,000 conv parameters); the head trains: Dense 32 on 32 features (1,056) + Dense 5 (165)
    assert summary["params"]["trainable"] == 32 * 32 + 32 + 32 * 5 + 5
    assert summary["params"]["frozen"] == 6_000


def test_finetune_from_our_own_run_with_default_feature_caching(cli, data_root, digits_run, tmp_path):
    result = cli("finetune", "--weights", f"run:{digits_run}", "--dataset", "digits", "--size", "28", "--classes",
                 "5", "--root", data_root, "--epochs", "1", "--out", tmp_path, "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["status"] == "completed"


# --- 8. usage errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--backbone", "resnet9000"], ["unknown backbone 'resnet9000'", "resnet18", "xception"]),
        (["--backbone", "squeezenet1_1", "--weights", "none", "--freeze", "half"], ["bad --freeze 'half'", "last:N"]),
        (["--backbone", "squeezenet1_1", "--weights", "none", "--freeze", "from:features.99"],
         ["from:features.99", "features.12"]),
        (["--backbone", "squeezenet1_1", "--weights", "none", "--freeze", "last:50"], ["last:50", "only 9 blocks"]),
        (["--backbone", "squeezenet1_1", "--weights", "/no/such.pth"], ["/no/such.pth", "no such file"]),
        (["--backbone", "squeezenet1_1", "--weights", "none", "--head", "mlp:a,b"], ["bad --head 'mlp:a,b'"]),
        (["--weights", "run:/no/such/run"], ["/no/such/run", "is not a run directory"]),
        (["--weights", "none"], ["--backbone is required"]),
        (["--backbone", "resnet18", "--weights", "none", "--head", "extended"], ["--pool max2 needs a feature map"]),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_clear_line(cli, data_root, tmp_path, args, expected):
    result = cli(*finetune_args(data_root, tmp_path / "runs", "--epochs", "1", *args))
    assert result.code == 2, result.err
    line = one_error_line(result.err)
    for fragment in expected:
        assert fragment in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_weights_file_for_another_architecture_is_refused(cli, data_root, tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision_state("resnet18"), weights)
    result = cli(*finetune_args(data_root, tmp_path / "runs", "--backbone", "squeezenet1_1", "--weights", weights,
                                "--epochs", "1"))  # fmt: skip
    assert result.code == 2
    assert "another architecture" in one_error_line(result.err)


# --- 9. aliases -------------------------------------------------------------------------------------------------------


def test_seed_aliases_resolve_to_the_closest_torchvision_backbone_with_a_note():
    entry, note = resolve_backbone("resnet50v2")
    assert entry.name == "resnet50" and note and note.startswith("resnet50v2 -> resnet50")
    entry, note = resolve_backbone("Xception")
    assert entry.name == "efficientnet_b3" and "Xception" in note
    entry, note = resolve_backbone("resnet18")
    assert entry.name == "resnet18" and note is None
    with pytest.raises(UsageError, match="resnet50v2, xception"):
        resolve_backbone("resnet51")


def test_an_alias_is_recorded_in_the_run(data_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cnnbench")
    result = run_spec(finetune_spec(PrepareOptions(dataset="digits", root=data_root, size=32, classes=2),
                                    backbone="resnet50v2", weights="none", epochs=1, seed=0, freeze="all",
                                    precision="fp32", channels_last=False, threads=2),
                      out=tmp_path)  # fmt: skip  (frozen, format given: no resnet50 probe or backward pass to wait for)
    config = result.run.config()
    assert config["model"]["name"] == config["finetune"]["backbone"] == "resnet50"
    assert config["finetune"]["weights"]["alias"].startswith("resnet50v2 -> resnet50")
    assert any(line.startswith("note: resnet50v2 -> resnet50") for line in caplog.messages)


def test_finetune_models_are_ordinary_rebuildable_runs(data_root, tmp_path):
    """config.json's model spec rebuilds the fine-tune model, freezing included, so evaluate and resume work."""
    result = run_spec(finetune_spec(PrepareOptions(dataset="digits", root=data_root, size=32), backbone="squeezenet1_1",
                                    weights="none", head="extended", units=8, pool="avg", freeze="last:2", epochs=1,
                                    seed=0), out=tmp_path)  # fmt: skip
    model_spec = ModelSpec.from_dict(result.run.config()["model"])
    assert model_spec.options["freeze"] == "last:2" and model_spec.options["head"]["kind"] == "extended"
    model = build(model_spec)
    model.load_state_dict(result.run.load_checkpoint("best")["model"])
    assert trainable(model.backbone) == FIRE_11_12
    assert json.loads((result.run.path / "summary.json").read_text())["params"]["trainable"] == trainable(model)


def test_models_json_lists_the_backbones_and_the_aliases(cli):
    result = cli("models", "--json")
    assert result.code == 0, result.err
    listing = result.json()
    backbones = {row["name"]: row for row in listing["backbones"]}
    assert {"resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1", "efficientnet_b3"} <= set(backbones)
    squeeze = backbones["squeezenet1_1"]
    assert squeeze["params"] == SQUEEZENET_BACKBONE and squeeze["channels"] == 512
    assert squeeze["weights_file"] == "squeezenet1_1-b8a52dc0.pth"
    assert "resnet50" in listing["aliases"]["resnet50v2"] and "efficientnet_b3" in listing["aliases"]["xception"]
    assert "resnet50v2" not in backbones  # an alias is not a backbone of its own


def test_penalties_default_to_the_head_but_an_explicit_reg_layers_is_kept(cli, data_root, tmp_path):
    common = ["--backbone", "squeezenet1_1", "--weights", "none", "--epochs", "1", "--l2", "0.01"]
    default = cli(*finetune_args(data_root, tmp_path / "a", *common))
    explicit = cli(*finetune_args(data_root, tmp_path / "b", *common, "--reg-layers", "*"))
    assert default.code == 0 and explicit.code == 0, default.err + explicit.err
    layers = [RunDir(Path(r.json()["run_dir"])).config()["train"]["reg_layers"] for r in (default, explicit)]
    assert layers == ["head.*", "*"]  # S3 penalises the new head; a user who asks for every layer gets every layer
