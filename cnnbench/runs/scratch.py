"""The `train` run kind: a model built from the spec and initialised from scratch."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cnnbench.data.prepare import Prepared
from cnnbench.engine import initialise
from cnnbench.models import build_model
from cnnbench.runs.record import RunConfig
from cnnbench.runs.pipeline import ModelPlan, RunResult, dataset_normalization, train_with_plan
from cnnbench.spec.run import RunSpec
from cnnbench.spec.train import TrainConfig


def plan(spec: RunSpec, prepared: Prepared) -> ModelPlan:
    model, model_spec = build_model(spec.model_name, prepared.input_spec, dropout=spec.model.dropout,
                                    arch=asdict(spec.model.arch))  # fmt: skip
    initialise(model, spec.model.init)
    return ModelPlan(model=model, spec=model_spec, normalization=dataset_normalization(prepared))


def start(spec: RunSpec, request: Any, *, out: Path, progress: Any, callbacks: tuple[Any, ...],
          extra: dict[str, Any]) -> RunResult:  # fmt: skip
    return train_with_plan(spec, lambda prepared: plan(spec, prepared), out=out, progress=progress,
                           callbacks=callbacks, extra=extra)


def restore(saved: RunConfig, plan: ModelPlan, config: TrainConfig) -> None:
    """A scratch run's rebuilt model and the trainer's saved state are all it needs."""
