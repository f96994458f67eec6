"""The run record: config.json and summary.json as dataclasses, the one place that knows their keys.

The pipeline writes a `RunConfig` when a run starts and a `RunSummary` when it ends; every reader (resume, evaluate,
finetune from a run, prune, report, studies, search) gets them typed from `RunDir.record()` / `RunDir.outcome()`.
Older run directories stay readable:

    schema 1  config.json without "spec" (the model's name, dropout and init inside "train"): `run_spec` rebuilds it
    schema 2  "spec" beside the resolved sections; no "schema" in summary.json
    schema 3  these dataclasses; the same keys as 2, and "schema" in summary.json too

A key the record does not know (a search's "trial", a study's "recipe_identity", anything a later version adds) is
kept in `records` and written back unchanged, so reading and rewriting a record never loses a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from cnnbench.spec.run import RunSpec
from cnnbench.spec.train import TrainConfig

SCHEMA = 3


def _split(cls, document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keys `cls` has fields for, everything else)."""
    known = {f.name for f in fields(cls)} - {"records"}
    return ({k: v for k, v in document.items() if k in known}, {k: v for k, v in document.items() if k not in known})


def _without_empty(document: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """Leave out the optional sections a run does not have (a scratch run has no "parent"), as config.json always did."""
    return {k: v for k, v in document.items() if not (k in optional and v in (None, [], {}))}


@dataclass(kw_only=True)
class RunConfig:
    """config.json: what was asked (`spec`) and what was resolved and built (the other sections)."""

    kind: str  # train | finetune | prune (runs/kinds.py)
    data: dict[str, Any]  # PrepareOptions.to_dict(), paths absolute
    prepared: dict[str, Any]  # directory, split_hashes, counts per split, synthetic
    train: dict[str, Any]  # TrainConfig.to_dict()
    model: dict[str, Any]  # ModelSpec.to_dict(): enough to rebuild the model
    device: dict[str, Any]  # device_info, precision, channels_last, the format probe's answer
    spec: dict[str, Any] | None = None  # RunSpec.to_dict(); None in a schema-1 run
    normalization: dict[str, Any] | None = None  # mean, std, source; None in runs from before fine-tuning
    params: dict[str, Any] = field(default_factory=dict)  # trainable, frozen, keras_total, macs, size_mb
    parent: str | None = None  # the run this one started from (a fine-tune's head phase, a pruned run's parent)
    finetune: dict[str, Any] | None = None  # backbone, weights, freezing, head
    pruning: dict[str, Any] | None = None  # method, amount, layers, schedule, ...
    resumed: list[str] = field(default_factory=list)  # when each resume started
    schema: int = SCHEMA
    cnnbench_version: str | None = None
    created: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    git: str | None = None
    records: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    OPTIONAL = ("spec", "normalization", "parent", "finetune", "pruning", "resumed")

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RunConfig:
        known, records = _split(cls, document)
        known.setdefault("kind", "train")
        known.setdefault("schema", 1)  # schema 1 wrote no "schema"
        return cls(**known, records=records)

    def to_dict(self) -> dict[str, Any]:
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        return {**_without_empty(document, self.OPTIONAL), **self.records}

    def run_spec(self) -> RunSpec:
        """The RunSpec this run was started with; a schema-1 run's is rebuilt from its sections."""
        if self.spec is not None:
            return RunSpec.from_dict(self.spec)
        train = dict(self.train)
        model = {"name": self.model["name"], "dropout": train.pop("dropout", None),
                 "init": train.pop("init", "default")}  # fmt: skip
        train.pop("model", None)
        finetune = self.finetune or {}
        if self.kind == "finetune":
            model.update(weights=(finetune.get("weights") or {}).get("source", "imagenet"),
                         freeze=finetune.get("freeze"), freeze_bn=finetune.get("freeze_bn", False))  # fmt: skip
        known = set(TrainConfig.__dataclass_fields__)
        return RunSpec.from_dict({"kind": self.kind, "data": dict(self.data), "model": model,
                                  "train": {k: v for k, v in train.items() if k in known}})  # fmt: skip

    def model_spec(self):
        """The spec that rebuilds this run's model (cnnbench.models.ModelSpec)."""
        from cnnbench.models import ModelSpec  # here: models imports torch, and `report` reads records without it

        return ModelSpec.from_dict(self.model)


@dataclass(kw_only=True)
class RunSummary:
    """summary.json, written last: its presence means the run ended (completed, interrupted, failed, diverged, or a
    callback's own status such as a search's "pruned")."""

    status: str
    epochs_completed: int | None = None
    epochs_planned: int | None = None
    stopped_early: bool = False
    best_epoch: int | None = None
    monitor: str | None = None
    best: dict[str, float] = field(default_factory=dict)  # train_loss, train_acc, val_loss, val_acc at best_epoch
    params: dict[str, Any] = field(default_factory=dict)
    seconds_this_session: float | None = None
    seconds_per_epoch_median: float | None = None
    images_per_s_median: float | None = None
    device: str | None = None
    precision: str | None = None
    finished: str | None = None
    reason: str | None = None  # why a callback stopped it (diverged, a search's trial pruner)
    error: str | None = None  # a failed run's error
    signal: str | None = None  # an interrupted run's signal (SIGTERM), None for Ctrl-C
    resume_with: str | None = None  # the command that continues an interrupted run
    schema: int = SCHEMA
    records: dict[str, Any] = field(default_factory=dict)

    OPTIONAL = ("reason", "error", "signal", "resume_with")

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RunSummary:
        known, records = _split(cls, document)
        known.setdefault("schema", 2 if "status" in document else 1)  # before 3, summaries had no "schema"
        return cls(**known, records=records)

    def to_dict(self) -> dict[str, Any]:
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        return {**_without_empty(document, self.OPTIONAL), **self.records}
