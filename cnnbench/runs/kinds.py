"""Run kinds, and the one door into the run pipeline.

Every new run, whoever starts it (train, finetune, a search trial, a study step, retrain-best, a prune child), enters
through `run`; every resumed one through `resume_run`. A kind is a registry entry that owns how its runs start (the
model plan, and a fine-tune's head phase) and what a resumed run of that kind needs again (`restore`). What a caller
passes (callbacks such as a search's trial pruner, `extra` records for config.json) reaches every phase of every kind.

    train     a model from the zoo/fit/arch families, initialised from scratch   (scratch.py)
    finetune  transferred weights, a head and a freezing policy; --head-epochs   (finetune.py)
    prune     a parent run's best weights, pruned, then fine-tuned                (prune.py)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.core.registry import Registry
from cnnbench.runs import finetune, prune, scratch
from cnnbench.runs.pipeline import Restore, RunResult
from cnnbench.runs.pipeline import resume_run as resume_from_checkpoint
from cnnbench.runs.record import RunConfig
from cnnbench.spec.run import RunSpec


@dataclass(frozen=True, kw_only=True)
class RunKind:
    name: str
    description: str
    # start(spec, request, *, out, progress, callbacks, extra) -> RunResult; `request` is what the kind needs
    # beyond the spec (a prune child's checked request and target), None for the others
    start: Callable[..., RunResult]
    restore: Restore


KINDS: Registry[RunKind] = Registry("run kind")
for _kind in (
    RunKind(name="train", description="a model trained from scratch", start=scratch.start, restore=scratch.restore),
    RunKind(name="finetune", description="transfer learning: weights, a head, a freezing policy", start=finetune.start,
            restore=finetune.restore),
    RunKind(name="prune", description="a parent run's weights pruned, then fine-tuned", start=prune.start,
            restore=prune.restore),
):
    KINDS.register(_kind.name, _kind)

def run(spec: RunSpec, *, kind: str | None = None, request: Any = None, out: Path = Path("results/runs"),
        progress: Any = None, callbacks: list[Any] | tuple[Any, ...] = (),
        extra: dict[str, Any] | None = None) -> RunResult:  # fmt: skip
    """Start a run of `kind` (the spec's own unless given) into a new run directory under `out`. `callbacks` join the
    trainer of every phase; `extra` goes into every phase's config.json (a search records its trial there)."""
    return KINDS.get(kind or spec.kind).start(spec, request, out=Path(out), progress=progress,
                                              callbacks=tuple(callbacks), extra=dict(extra or {}))  # fmt: skip


def resume_run(path: Path, *, epochs: int | None = None, device: str | None = None, progress: Any = None,
               callbacks: list[Any] | tuple[Any, ...] = (), epochs_flag: str = "--epochs") -> RunResult:  # fmt: skip
    """Continue the run at `path` from its last checkpoint, with what its kind (config.json's `kind`) needs again:
    a pruned run's masks and schedule, a fine-tune's feature cache."""

    def restore(saved: RunConfig, plan, config) -> None:
        KINDS.get(saved.kind).restore(saved, plan, config)

    return resume_from_checkpoint(path, restore=restore, epochs=epochs, device=device, progress=progress,
                                  callbacks=callbacks, epochs_flag=epochs_flag)  # fmt: skip
