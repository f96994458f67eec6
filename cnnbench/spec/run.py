"""The run specification: one typed object (data, model, training) behind every run, whoever starts it.

`train`, `finetune`, a search trial, a pruned run and a study recipe all build a `RunSpec`; each run's config.json
stores it (with a schema version) and `--config FILE` reads it. Any field has a dotted name (`train.lr`, `data.size`,
`model.head.units`), so a search space or a study recipe can address any option the command line has.

Precedence is defaults < the command's base (finetune penalises `head.*` by default) < config file < flags actually
passed. A config file is TOML or JSON with `[data]`, `[model]` and `[train]` sections (dotted keys work too); a flat
file of training options, the format before sections existed, is still read (its keys go to `train`, and `model`,
`dropout` and `init` to the model section).

Nothing here imports torch: the CLI builds its options from `OPTIONS` below, and `cnnbench --help` stays fast.
"""

from __future__ import annotations

import json
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from cnnbench.spec.train import TrainConfig, validate_config
from cnnbench.data.prepare import PrepareOptions
from cnnbench.core.errors import UsageError
from cnnbench.core.registry import did_you_mean

KINDS = ("train", "finetune")
COMMANDS = ("train", "finetune", "tune")  # the commands that take the whole table below (others take a part of it)
DEFAULT_MODEL = "mnist-7498"
DEFAULT_DATASET, DEFAULT_DATASET_SIZE = "digits", 28
INITS = ("default", "glorot", "he")


@dataclass(frozen=True, kw_only=True)
class HeadChoice:
    """The classifier head a fine-tuned backbone gets (`finetune --head ...`)."""

    kind: str | None = None  # linear | extended | mlp:W1,W2,...; None: linear, or a parent run's own head
    units: int = 256  # hidden units of the extended head
    activation: str = "relu"
    pool: str | None = None  # avg | flatten | max2; None: the head's default


@dataclass(frozen=True, kw_only=True)
class ArchChoice:
    """The `arch` model family: a plain scratch CNN described by a few numbers, what `tune --space arch` searches.

    Per stage: Conv kxk (or depthwise kxk then pointwise 1x1, when conv = separable; stride 2 when downsample = stride) -> MaxPool 2 (when downsample = pool) -> ReLU ->
    BatchNorm (when batchnorm); widths width, width x growth, ...; then flatten (or global average pooling), dropout
    (`model.dropout`), an optional hidden dense layer and the output layer. Both S1 models are members: mnist-722 is
    stages 3, width 2, downsample stride, no BatchNorm, dense 0; mnist-7498 is stages 3, width 8, downsample pool,
    BatchNorm, dense 32 linear, dropout 0.3."""

    stages: int = 3
    width: int = 8  # channels of the first stage
    growth: float = 2.0  # channel multiplier from one stage to the next
    kernel: int = 3
    padding: str = "valid"  # valid | same
    downsample: str = "pool"  # pool (max-pool 2 after the conv) | stride (a stride-2 conv)
    batchnorm: bool = True
    dense: int = 32  # units of the hidden dense layer; 0: none
    dense_activation: str = "linear"  # linear | relu
    features: str = "flatten"  # flatten | avg (global average pooling)
    conv: str = "plain"  # plain | separable (depthwise kxk, then pointwise 1x1: MobileNet's, far fewer parameters)


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """Which model to build and how to initialise it (what a user chose; the resolved, rebuildable form is the
    run's `ModelSpec` in config.json["model"])."""

    name: str | None = None  # zoo model, fit:N, or a torchvision backbone (finetune); None: the command's default
    dropout: float | None = None  # None: the model's own (train) or 0 (a fine-tune head)
    init: str = "default"  # default (PyTorch's) | glorot (Keras' default) | he
    weights: str | None = None  # finetune: imagenet (the default: None) | none | PATH | run:RUN_DIR
    head: HeadChoice = field(default_factory=HeadChoice)
    arch: ArchChoice = field(default_factory=ArchChoice)  # the `arch` model's shape
    freeze: str | None = None  # finetune: all | none | fraction:X | last:N | from:MODULE; None: all, or none from scratch
    freeze_bn: bool = False


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    kind: str = "train"  # train: a model from scratch; finetune: transferred weights, a head and a freezing policy
    data: PrepareOptions = field(default_factory=lambda: PrepareOptions(dataset="digits"))
    model: ModelChoice = field(default_factory=ModelChoice)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return self.model.name or DEFAULT_MODEL

    def get(self, name: str) -> Any:
        """The value of a dotted name, e.g. spec.get("model.head.units")."""
        value: Any = self
        for part in _check_name(name).split("."):
            value = getattr(value, part)
        return value

    def with_values(self, values: dict[str, Any], *, origin: str = "") -> RunSpec:
        """A copy with dotted names set (type-checked, then the whole spec validated)."""
        return validate(_merge(self, values, origin))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def flat(self) -> dict[str, Any]:
        """Every field under its dotted name (a report's columns, a search's parameters)."""
        return {name: self.get(name) for name in NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return validate(_merge(cls(), _flatten(data, origin="config.json"), "config.json"))


# --- dotted names -----------------------------------------------------------------------------------------------------


def _names(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            out += _names(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


NAMES: tuple[str, ...] = tuple(_names(RunSpec))


def _check_name(name: str, origin: str = "") -> str:
    if name not in NAMES:
        hint = did_you_mean(name, NAMES)
        where = f" in {origin}" if origin else ""
        raise UsageError(f"unknown option {name!r}{where}{hint}; options are dotted names such as train.lr, "
                         f"data.size, model.head.units (see `cnnbench train --help`)")  # fmt: skip
    return name


def field_type(name: str) -> Any:
    """The declared type of a dotted name (e.g. int | None)."""
    cls: Any = RunSpec
    *parents, last = name.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[last]


def default_of(name: str, base: RunSpec | None = None) -> Any:
    return (base or RunSpec()).get(name)


def _arms(kind: Any) -> tuple[Any, ...]:
    return typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union \
        else (kind,)  # fmt: skip


def coerce(name: str, value: Any, origin: str = "") -> Any:
    """`value` as the type `name` declares, or a UsageError naming the option, the value and the expected type.

    Config files hold JSON values: a path is a string, a split a list; an int is a float where a float is wanted."""
    arms = _arms(field_type(name))
    for arm in arms:
        if value is None and arm is type(None):
            return None
        if arm is bool and isinstance(value, bool):
            return value
        if arm is int and isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:  # what a tensor, a seed or a loop counter can hold
                where = f" in {origin}" if origin else ""
                raise UsageError(f"bad {flag_of(name)} {value}{where}: too large; expected a whole number below 2**63")
            return value
        if arm is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if arm is str and isinstance(value, str):
            return value
        if arm is Path and isinstance(value, (str, Path)):
            return Path(value)
        if typing.get_origin(arm) is tuple and name == "data.split":
            from cnnbench.data.prepare import parse_split

            if isinstance(value, str):
                return parse_split(value)
            if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
                return parse_split(",".join(str(v) for v in value))
    expected = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in arms)
    where = f" in {origin}" if origin else ""
    raise UsageError(f"bad {name} {value!r}{where}: expected {expected}")


def _merge(spec: RunSpec, values: dict[str, Any], origin: str = "") -> RunSpec:
    for name, value in values.items():
        spec = _set(spec, _check_name(name, origin).split("."), coerce(name, value, origin))
    return spec


def _set(obj: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], value)})


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return obj


# Keys of a flat, section-less config file (the format before sections) that belong to the model section.
_LEGACY_MODEL_KEYS = {"model": "model.name", "dropout": "model.dropout", "init": "model.init"}


def _flatten(data: dict[str, Any], prefix: str = "", *, origin: str) -> dict[str, Any]:
    """Nested sections and dotted keys -> {dotted name: value}; a flat legacy file's keys go to their sections."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise UsageError(f"bad key {key!r} in {origin}: expected option names")
        name = prefix + key
        if not prefix and key in _LEGACY_MODEL_KEYS and not isinstance(value, dict):
            name = _LEGACY_MODEL_KEYS[key]
        elif not prefix and "." not in key and key not in ("kind", "data", "model", "train", "schema") \
                and f"train.{key}" in NAMES:  # fmt: skip
            name = f"train.{key}"
        if isinstance(value, dict) and name not in NAMES:
            out.update(_flatten(value, f"{name}.", origin=origin))
        elif name != "schema":
            out[name] = value
    return out


# --- files ------------------------------------------------------------------------------------------------------------


def load_file(path: Path) -> dict[str, Any]:
    """A config file (TOML, or JSON by any other suffix) as {dotted name: value}; one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--config {str(path)!r} is a folder; give a TOML or JSON file (examples/*.toml)")
    if not path.is_file():
        raise UsageError(f"--config {str(path)!r} does not exist")
    is_toml = path.suffix.lower() == ".toml"
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors write one) is not content
        data = tomllib.loads(text) if is_toml else json.loads(text)
    except UnicodeDecodeError:
        raise UsageError(f"--config {str(path)!r} is not UTF-8 text") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"--config {str(path)!r} is not valid {'TOML' if is_toml else 'JSON'}: {error}") from None
    except OSError as error:
        raise UsageError(f"--config {str(path)!r} cannot be read: {error.strerror}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {str(path)!r} must hold an object of sections (data, model, train) and values")
    return _flatten(data, origin=f"--config {path}")


def resolve(passed: dict[str, Any], config_file: Path | None = None, *, base: RunSpec | None = None) -> RunSpec:
    """base (or the defaults) < config file < flags actually passed (None values mean 'not passed').

    The data split's seed follows the training seed unless `data.seed` is given itself."""
    spec = base or RunSpec()
    layers = []
    if config_file is not None:
        layers.append((load_file(config_file), f"--config {config_file}"))
    layers.append(({k: v for k, v in passed.items() if v is not None}, "the command line"))
    for values, origin in layers:
        spec = _merge(spec, values, origin)
    given = set().union(*(values for values, _ in layers))
    if "data.seed" not in given:
        spec = replace(spec, data=replace(spec.data, seed=spec.train.seed))
    if not given & {"data.dataset", "data.size"} and spec.data.dataset == DEFAULT_DATASET:
        # Nothing said about the data: the bundled 8x8 digits at the side the default models (S1's) take, so that a
        # bare `cnnbench train` trains something instead of refusing 8x8 inputs.
        spec = replace(spec, data=replace(spec.data, size=DEFAULT_DATASET_SIZE))
    return validate(spec)


def validate(spec: RunSpec) -> RunSpec:
    """Value checks across the sections (types are checked on the way in); the first bad value raises."""
    if spec.kind not in KINDS:
        raise UsageError(f"bad kind {spec.kind!r}: choose from {', '.join(KINDS)}")
    validate_config(spec.train)
    m = spec.model
    if m.init not in INITS:
        raise UsageError(f"bad --init {m.init!r}: choose from {', '.join(INITS)}")
    if m.dropout is not None and not (math.isfinite(m.dropout) and 0.0 <= m.dropout < 1.0):
        raise UsageError(f"bad --dropout {m.dropout}: expected a probability in [0, 1)")
    a = m.arch
    for name, value, allowed in (("padding", a.padding, ("valid", "same")), ("downsample", a.downsample,
                                 ("pool", "stride")), ("dense-activation", a.dense_activation, ("linear", "relu")),
                                 ("features", a.features, ("flatten", "avg")), ("conv", a.conv,
                                 ("plain", "separable"))):  # fmt: skip
        if value not in allowed:
            raise UsageError(f"bad --arch-{name} {value!r}: choose from {', '.join(allowed)}")
    if not (1 <= a.stages <= 8 and a.width >= 1 and a.growth > 0 and a.kernel >= 1 and a.dense >= 0):
        raise UsageError(f"bad arch {a}: expected 1-8 stages, width >= 1, growth > 0, kernel >= 1, dense >= 0")
    if m.head.units < 1:
        raise UsageError(f"bad --units {m.head.units}: expected 1 or more")
    if spec.data.seed < 0 or spec.data.seed >= 2**32:
        raise UsageError(f"bad --data-seed {spec.data.seed}: expected a whole number from 0 to 4294967295")
    if spec.data.classes is not None and spec.data.classes < 2:
        raise UsageError(f"bad --classes {spec.data.classes}: expected 2 or more")
    if spec.kind == "train" and m.name is not None and m.name.startswith("run:"):
        raise UsageError(f"--model {m.name}: start from a run with `cnnbench finetune --weights {m.name}`")
    return spec


def base_for(kind: str) -> RunSpec:
    """The defaults a command starts from: fine-tuning penalises (--l1/--l2) the new head, not the pretrained body."""
    if kind == "finetune":
        return RunSpec(kind="finetune", train=TrainConfig(reg_layers="head.*"))
    return RunSpec(kind="train")  # train, and tune's defaults (a search over scratch models unless told otherwise)


# --- the command-line options, declared once ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One command-line option: its dotted name, flags, help, panel and the commands that take it; the default shown
    in --help is read from the dataclasses (or `default` when the effective default needs words). cli/options.py
    makes the Typer parameters from it."""

    name: str
    flags: tuple[str, ...]
    help: str
    panel: str = "Training"
    commands: tuple[str, ...] = COMMANDS
    default: str | None = None  # the default as --help shows it; None: the field's own default
    parse: Callable[[str], Any] | None = None  # text -> value, for types the shell cannot give (a split)

    @property
    def param(self) -> str:
        """The Python parameter name the CLI gives this option (unique per command: --model and --backbone are both
        model.name, and `tune` has both)."""
        return self.name.replace(".", "__") + ("__backbone" if self.flags[0] == "--backbone" else "")

    def shown_default(self, kind: str) -> str:
        if self.default is not None:
            return self.default
        value = default_of(self.name, base_for(kind))
        if value is None:
            return "off"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)


def _split_text(text: str) -> Any:
    from cnnbench.data.prepare import parse_split

    return parse_split(text)


_DATA, _TRAIN, _MODEL, _DEVICE, _TRANSFER, _ARCH = "Data", "Training", "Model", "Device", "Transfer", "Arch model"
_PREPARED = (*COMMANDS, "prepare")  # the options that shape a prepared dataset
_SHAPED = (*_PREPARED, "budget", "models")  # ... and of them, those that change its shape
OPTIONS: tuple[Option, ...] = (
    # model
    Option("model.name", ("--model", "-m"), "Zoo model or fit:N (see `cnnbench models`).", _MODEL, ("train", "tune"),
           default=DEFAULT_MODEL),
    Option("model.name", ("--backbone",), "A torchvision backbone from `cnnbench models` (resnet50v2 and xception map "
           "to the closest one).", _TRANSFER, ("finetune", "tune"), default="the parent run's, with --weights run:"),
    Option("model.dropout", ("--dropout",), "Dropout (train: overrides the model's; finetune: the head's).", _MODEL,
           default="the model's / 0"),
    Option("model.init", ("--init",), "default | glorot (Keras) | he.", _MODEL),
    Option("model.arch.stages", ("--arch-stages",), "--model arch: convolution stages.", _ARCH, ("train", "tune")),
    Option("model.arch.width", ("--arch-width",), "--model arch: channels of the first stage.", _ARCH, ("train", "tune")),
    Option("model.arch.growth", ("--arch-growth",), "--model arch: channel multiplier per stage.", _ARCH, ("train", "tune")),
    Option("model.arch.kernel", ("--arch-kernel",), "--model arch: kernel size.", _ARCH, ("train", "tune")),
    Option("model.arch.padding", ("--arch-padding",), "--model arch: valid | same.", _ARCH, ("train", "tune")),
    Option("model.arch.downsample", ("--arch-downsample",), "--model arch: pool | stride.", _ARCH, ("train", "tune")),
    Option("model.arch.batchnorm", ("--arch-batchnorm/--no-arch-batchnorm",), "--model arch: BatchNorm per stage.",
           _ARCH, ("train", "tune")),
    Option("model.arch.dense", ("--arch-dense",), "--model arch: hidden dense units (0: none).", _ARCH, ("train", "tune")),
    Option("model.arch.dense_activation", ("--arch-dense-activation",), "--model arch: linear | relu.", _ARCH,
           ("train", "tune")),
    Option("model.arch.features", ("--arch-features",), "--model arch: flatten | avg (global average pooling).",
           _ARCH, ("train", "tune")),
    Option("model.arch.conv", ("--arch-conv",), "--model arch: plain | separable (depthwise, then 1x1).", _ARCH,
           ("train", "tune")),
    Option("model.weights", ("--weights",), "imagenet | none | PATH (a state dict) | run:RUN_DIR", _TRANSFER,
           ("finetune", "tune"), default="imagenet"),
    Option("model.head.kind", ("--head",), "linear | extended | mlp:W1,W2,...", _TRANSFER, ("finetune", "tune"),
           default="linear, or the parent run's head"),
    Option("model.head.units", ("--units",), "Hidden units of the extended head.", _TRANSFER, ("finetune", "tune")),
    Option("model.head.activation", ("--activation",), "relu | elu | gelu | tanh | leaky_relu", _TRANSFER,
           ("finetune", "tune")),
    Option("model.head.pool", ("--pool",), "avg | flatten | max2", _TRANSFER, ("finetune", "tune"),
           default="avg; max2 for extended"),
    Option("model.freeze", ("--freeze",), "all | none | fraction:X | last:N | from:MODULE", _TRANSFER, ("finetune", "tune"),
           default="all; none with --weights none"),
    Option("model.freeze_bn", ("--freeze-bn/--no-freeze-bn",), "Keep BatchNorm layers frozen (statistics and "
           "affine) even in unfrozen blocks.", _TRANSFER, ("finetune", "tune")),
    Option("train.head_epochs", ("--head-epochs",), "First train the head alone for N epochs (a parent run), then "
           "fine-tune.", _TRANSFER, ("finetune", "tune")),
    Option("train.head_lr", ("--head-lr",), "Learning rate of the head-only phase.", _TRANSFER, ("finetune", "tune"),
           default="--lr"),
    Option("train.backbone_lr_mult", ("--backbone-lr-mult",), "Backbone lr = lr x this.", _TRANSFER, ("finetune", "tune")),
    Option("train.cache_features", ("--cache-features/--no-cache-features",), "With a frozen backbone and no "
           "augmentation, compute its features once.", _TRANSFER, ("finetune", "tune")),
    # data
    Option("data.dataset", ("--dataset", "-d"), "A name from `cnnbench datasets`, or folder:PATH.", _DATA,
           default=f"{DEFAULT_DATASET}, at {DEFAULT_DATASET_SIZE}x{DEFAULT_DATASET_SIZE} unless --size"),
    # `prepare` takes the dataset as its argument and the split's seed as --seed; `budget` and `models` only the
    # options that change a dataset's shape; `datasets` and `study` only --root.
    Option("data.root", ("--root",), "Folder the datasets live in (torchvision's layout).", _DATA,
           (*_PREPARED, "datasets", "study")),
    Option("data.split", ("--split",), "train,val,test ratios over all labelled data, e.g. 0.64,0.16,0.20.", _DATA,
           _PREPARED, default="the dataset's own test (and val) set, validation carved from train", parse=_split_text),
    Option("data.val_fraction", ("--val-fraction",), "Part of train held out for validation when the dataset has its "
           "own test set and no --split.", _DATA, _PREPARED),
    Option("data.seed", ("--data-seed",), "Seed for the split and class subset.", _DATA, default="--seed"),
    Option("data.seed", ("--seed",), "Seed for the split and the class subset.", _DATA, ("prepare",)),
    Option("data.classes", ("--classes",), "Keep N classes, chosen by the seed (S2).", _DATA, _SHAPED, default="all"),
    Option("data.grayscale", ("--grayscale/--no-grayscale",), "Convert images to one channel.", _DATA, _SHAPED),
    Option("data.size", ("--size",), "Resize images to SIZE x SIZE.", _DATA, _SHAPED, default="the dataset's"),
    Option("data.source", ("--source",), "catsdogs: the Kaggle archive or its folder.", _DATA, _PREPARED),
    Option("data.download", ("--download/--no-download",), "Fetch the files if they are not under --root.", _DATA,
           _PREPARED),
    # Not on tune, whose --storage is the study's database (a search sets data.storage in its --config file).
    Option("data.storage", ("--storage",), "auto | memory | files (a file index, decoded while training).", _DATA,
           ("train", "finetune", "prepare")),
    # training
    Option("train.epochs", ("--epochs",), "Epochs to train (with --resume: the new total)."),
    Option("train.batch_size", ("--batch-size", "-b"), "Images per step."),
    Option("train.lr", ("--lr",), "Learning rate."),
    Option("train.optimizer", ("--optimizer",), "adam | adamw | sgd | rmsprop."),
    Option("train.momentum", ("--momentum",), "sgd/rmsprop momentum."),
    Option("train.nesterov", ("--nesterov/--no-nesterov",), "Nesterov momentum for sgd."),
    Option("train.beta1", ("--beta1",), "Adam beta1."),
    Option("train.beta2", ("--beta2",), "Adam beta2."),
    Option("train.weight_decay", ("--weight-decay",), "Decoupled (adamw) or L2-style (others) weight decay."),
    Option("train.l1", ("--l1",), "L1 penalty on the weights of --reg-layers."),
    Option("train.l2", ("--l2",), "L2 penalty on the weights of --reg-layers."),
    Option("train.reg_layers", ("--reg-layers",), "Glob over layer names for --l1/--l2, e.g. 'head.*'.",
           default="* for train, head.* for finetune"),
    Option("train.schedule", ("--schedule",), "constant | step | cosine | onecycle | plateau."),
    Option("train.warmup_epochs", ("--warmup-epochs",), "Linear warmup."),
    Option("train.step_size", ("--step-size",), "step: epochs between decays."),
    Option("train.gamma", ("--gamma",), "step/plateau decay factor."),
    Option("train.plateau_patience", ("--plateau-patience",), "plateau: epochs without improvement before decaying."),
    Option("train.label_smoothing", ("--label-smoothing",), "Label smoothing."),
    Option("train.clip_grad", ("--clip-grad",), "Max gradient norm."),
    Option("train.patience", ("--patience",), "Early stopping patience in epochs; restores the best weights. 0 = off."),
    Option("train.monitor", ("--monitor",), "val_loss | val_acc."),
    Option("train.min_delta", ("--min-delta",), "Smallest change that counts as an improvement."),
    Option("train.augment", ("--augment",), "Preset (none, flip, light, s2, s4) or items, e.g. "
           "flip,translate=0.1,rotate=20,zoom=0.2,shear=0.2,brightness=0.8-1.2."),
    Option("train.seed", ("--seed",), "Seed for weights, shuffling, augmentation (and the split unless --data-seed)."),
    Option("train.deterministic", ("--deterministic/--no-deterministic",), "Deterministic algorithms only (slower "
           "on GPU)."),
    Option("train.max_params", ("--max-params",), "Refuse (exit 1) a model with more trainable parameters, before "
           "training."),
    Option("train.eval_batch_size", ("--eval-batch-size",), "Images per evaluation step."),
    Option("train.workers", ("--workers",), "DataLoader workers for file-index datasets.", default="up to 4"),
    Option("train.tensorboard", ("--tensorboard/--no-tensorboard",), "Write TensorBoard event files into RUN/tb "
           "(pip install 'cnnbench[tensorboard]'); `tensorboard --logdir results`."),
    # device
    Option("train.device", ("--device",), "auto | cpu | cuda | cuda:N | mps.", _DEVICE),
    Option("train.precision", ("--precision",), "auto | fp32 | bf16 | fp16.", _DEVICE,
           default="auto: bf16 or fp16 on CUDA; on a CPU the faster of fp32 and bf16, measured once"),
    Option("train.channels_last", ("--channels-last/--no-channels-last",), "Channels-last memory format.", _DEVICE,
           default="on CUDA; on a CPU, measured once"),
    Option("train.threads", ("--threads",), "CPU threads.", _DEVICE,
           default="on a CPU, the fastest of all cores, half, a quarter ..., measured once"),
    Option("train.compile", ("--compile/--no-compile",), "torch.compile the model.", _DEVICE),
)


def options_for(command: str) -> list[Option]:
    return [option for option in OPTIONS if command in option.commands]


def flag_of(name: str, kind: str = "train") -> str:
    """The command-line flag of a dotted name, for messages ("bad --lr ...")."""
    for option in OPTIONS:
        if option.name == name and kind in option.commands:
            return option.flags[0].split("/")[0]
    return name


assert {o.name for o in OPTIONS} <= set(NAMES), "every option names a spec field"
assert set(NAMES) - {o.name for o in OPTIONS} <= {"kind"}, "every spec field has an option"
