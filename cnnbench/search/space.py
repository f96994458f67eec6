"""Search spaces: typed ranges over the run specification's dotted names (`train.lr`, `model.arch.width`), read from
a built-in space or a TOML/JSON file and checked entry by entry before any trial runs; and what a sampled point
becomes: the trial's run specification, and an `arch` model's closed-form size, for rejecting it before it is built.
"""

from __future__ import annotations

import json
import tomllib
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.core.registry import did_you_mean
from cnnbench.spec.run import NAMES, RunSpec, coerce, field_type


@dataclass(frozen=True)
class Param:
    name: str  # a dotted name of the run specification
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value, for the grid sampler (a float range needs a step)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise UsageError(f"--sampler grid needs a step for the range {self.name}; give step = ... in the space")
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [float(v) for v in values]


def parse_space(data: dict[str, Any], origin: str) -> list[Param]:
    """A space from a file's object: {"train.lr": {"float": [1e-5, 1e-2], "log": true}, "model.head.units": {"int":
    [128, 1024], "step": 128}, "train.optimizer": {"choices": ["adam", "sgd"]}}; TOML tables or dotted keys alike.
    Every entry is checked (name, type, range) before any trial runs."""
    entries = _entries(data)
    if not entries:
        raise UsageError(f"{origin} has no entries; give dotted names with ranges, e.g. \"train.lr\" = "
                         f"{{float = [1e-5, 1e-2], log = true}}")  # fmt: skip
    params = []
    for name, entry in entries.items():
        where = f"{origin}: {name}"
        if name not in NAMES:
            raise UsageError(f"{where}: unknown option{did_you_mean(name, NAMES)}; "
                             f"use the run specification's dotted names (train.lr, model.head.units, ...)")  # fmt: skip
        params.append(_param(name, entry, where))
    return params


def _entries(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + str(key)
        if isinstance(value, dict) and not ({"float", "int", "choices"} & set(value)):
            out.update(_entries(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param(name: str, entry: Any, where: str) -> Param:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a range such as {{float = [low, high]}}, {{int = [low, high]}} or "
                         f"{{choices = [...]}}, not {entry!r}")  # fmt: skip
    kinds = [k for k in ("float", "int", "choices") if k in entry]
    unknown = set(entry) - {"float", "int", "choices", "log", "step"}
    if len(kinds) != 1 or unknown:
        raise UsageError(f"{where}: give exactly one of float, int or choices (and optionally log, step)"
                         + (f"; unknown key(s) {', '.join(sorted(unknown))}" if unknown else ""))  # fmt: skip
    kind = kinds[0]
    if kind == "choices":
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: choices must be a non-empty list")
        for choice in choices:
            coerce(name, choice, where)  # each value must suit the option's type
        return Param(name, "categorical", choices=tuple(choices))
    bounds = entry[kind]
    numeric = (int,) if kind == "int" else (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, numeric) and not isinstance(b, bool)
                                                                  for b in bounds)):  # fmt: skip
        raise UsageError(f"{where}: {kind} takes [low, high] with {'whole ' if kind == 'int' else ''}numbers")
    low, high = bounds
    if not low < high:
        raise UsageError(f"{where}: empty range [{low}, {high}]; low must be below high")
    log, step = bool(entry.get("log", False)), entry.get("step")
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs low > 0")
    if step is not None and (not isinstance(step, numeric) or step <= 0 or log):
        raise UsageError(f"{where}: step must be a positive number (and cannot go with log)")
    accepted = [a for a in _arms(field_type(name)) if a in (int, float)]
    if (float if kind == "float" else int) not in accepted:  # an int range over a float would sample 1, 2, 3 only
        better = f"; give float = [{low}, {high}]" if float in accepted else ""
        article = "an" if kind == "int" else "a"
        takes = " or ".join(a.__name__ for a in _arms(field_type(name)) if a is not type(None))
        raise UsageError(f"{where}: {name} takes {takes}, not {article} {kind} range{better}")
    for bound in (low, high):
        coerce(name, bound, where)
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _arms(kind: Any) -> tuple[Any, ...]:
    args = typing.get_args(kind)
    return args if args else (kind,)


def load_space(text: str) -> tuple[str, list[Param]]:
    """A built-in space by name, or a TOML/JSON file."""
    if text in BUILTIN_SPACES:
        return text, parse_space(BUILTIN_SPACES[text], f"the built-in space {text}")
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--space {text!r}: no such built-in space or file; built-in: {', '.join(BUILTIN_SPACES)}")
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors write one) is not content
        data = tomllib.loads(raw) if path.suffix.lower() == ".toml" else json.loads(raw)
    except UnicodeDecodeError:
        raise UsageError(f"--space {text!r} is not UTF-8 text") from None
    except (ValueError, OSError) as error:
        raise UsageError(f"--space {text!r} cannot be read: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--space {text!r} must hold an object of dotted names and ranges")
    return path.stem, parse_space(data, f"--space {text}")


BUILTIN_SPACES: dict[str, dict[str, Any]] = {
    # S3, experiment 5: a random search over the extended head and Adam (dropout, lr, units, beta1, beta2).
    "s3": {
        "model.dropout": {"float": [0.2, 0.7]},
        "train.lr": {"float": [1e-5, 1e-3], "log": True},
        "model.head.units": {"int": [128, 1024], "step": 128},
        "train.beta1": {"float": [0.85, 0.95]},
        "train.beta2": {"float": [0.99, 0.9999]},
    },
    # S4's KerasTuner search on the arch family: first block's filters 32-64 doubling per block (the seed's
    # 32-64 / 64-128 / 128-256), dropout, dense units 128-256, optimizer adam or sgd; 3x3 'same' convs with pooling.
    "s4": {
        "model.arch.width": {"int": [32, 64], "step": 16},
        "model.dropout": {"float": [0.2, 0.5], "step": 0.1},
        "model.arch.dense": {"int": [128, 256], "step": 64},
        "train.optimizer": {"choices": ["adam", "sgd"]},
    },
    # Architectures under a budget (--max-params): rich enough to hold both S1 models (see spec.ArchChoice).
    "arch": {
        "model.arch.stages": {"int": [1, 4]},
        "model.arch.width": {"choices": [2, 3, 4, 6, 8, 12, 16, 24, 32]},
        "model.arch.growth": {"choices": [1.0, 1.5, 2.0]},
        "model.arch.kernel": {"choices": [3, 5]},
        "model.arch.padding": {"choices": ["valid", "same"]},
        "model.arch.downsample": {"choices": ["pool", "stride"]},
        "model.arch.batchnorm": {"choices": [True, False]},
        "model.arch.dense": {"choices": [0, 16, 32, 64]},
        "model.arch.dense_activation": {"choices": ["linear", "relu"]},
        "model.arch.features": {"choices": ["flatten", "avg"]},
        "model.dropout": {"float": [0.0, 0.5], "step": 0.1},
    },
}
# The architecture and the training recipe together (issue 20): a tiny model's accuracy depends on its learning rate,
# schedule, augmentation and batch as much as on its shape, and the seeds' hand designs were tuned with theirs.
# Separable convolutions (MobileNet's) buy width within a parameter budget. The augmentation is digits-safe (small
# shifts and rotations; no flips, which turn digits into other digits).
BUILTIN_SPACES["arch-recipe"] = {
    **BUILTIN_SPACES["arch"],
    "model.arch.conv": {"choices": ["plain", "separable"]},
    "train.lr": {"float": [3e-4, 1e-2], "log": True},
    "train.schedule": {"choices": ["constant", "cosine", "onecycle"]},
    "train.augment": {"choices": ["none", "translate=0.1", "translate=0.1,rotate=10"]},
    "train.label_smoothing": {"choices": [0.0, 0.1]},
    "train.batch_size": {"choices": [32, 64, 128, 256]},
}
# What each built-in space sets besides its ranges (the arch spaces train the `arch` model; s4 its seed's shape).
BUILTIN_BASE: dict[str, dict[str, Any]] = {
    "s4": {"model.name": "arch", "model.arch.stages": 3, "model.arch.padding": "same", "model.arch.downsample": "pool",
           "model.arch.batchnorm": False, "model.arch.dense_activation": "relu", "model.arch.growth": 2.0},
    "arch": {"model.name": "arch"},
    "arch-recipe": {"model.name": "arch"},
}


def with_space_base(base: RunSpec, space_name: str) -> RunSpec:
    """The base a built-in space's trials start from: its own settings (BUILTIN_BASE), unless the user chose
    otherwise (a value that differs from the default)."""
    for name, value in BUILTIN_BASE.get(space_name, {}).items():
        if base.get(name) == RunSpec().get(name):
            base = base.with_values({name: value})
    return base


def trial_spec(base: RunSpec, params: dict[str, Any]) -> RunSpec:
    """The run specification a trial trains: the base with the sampled values set."""
    return base.with_values(params, origin="the search space")


def budget_of(spec: RunSpec) -> tuple[int, int] | None:
    """(parameters, MACs) of an `arch` model from its closed form, without building it; None for other models."""
    if spec.model_name != "arch":
        return None
    # here, not at the top: these import torch, and a space or option error should exit without waiting for it
    from cnnbench.models.arch import plan
    from cnnbench.models.budget import dataset_input

    shape = dataset_input(spec.data.dataset, size=spec.data.size, grayscale=spec.data.grayscale,
                          classes=spec.data.classes)  # fmt: skip
    try:
        result = plan(shape, asdict(spec.model.arch))
    except UsageError:
        return None  # too small an input for this architecture: rejected like an over-budget one
    return result.params, result.macs
