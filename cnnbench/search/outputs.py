"""What a study leaves in its folder, rewritten after every search: trials.csv and trials.md (the markdown without
rejected samples, with a parameter-importance table), best.json (a config file `train --config` accepts), the
optimisation-history and accuracy-against-size plots; and the log's line for each trial."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from cnnbench.core import plots
from cnnbench.core.storage import write_json_atomic, write_text_atomic
from cnnbench.core.tables import markdown_table
from cnnbench.runs.rundir import RunDir
from cnnbench.search.journal import run_of
from cnnbench.search.options import TuneOptions
from cnnbench.search.space import Param


def trial_line(number: int, status: str, value: float | None, params: dict[str, Any], runs: list[str]) -> str:
    """The log's line for a finished trial: its score (or status) and its sampled values."""
    shown = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
    score = f"val_acc {value:.4f}" if value is not None else status
    return f"trial {number:>3}  {score:<15}  {shown}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trials_frame(study, folder: Path):
    """One row per trial: state, score, sampled values, size, timings, and why it was rejected or failed."""
    import pandas as pd  # here, not at the top: a space or option error should exit without importing pandas

    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        runs = [run_of(folder, recorded) for recorded in t.user_attrs.get("runs", [])]
        missing = [str(run) for run in runs if not run.is_dir()]
        note = t.user_attrs.get("rejected") or t.user_attrs.get("failure") or ""
        if missing:  # deleted by hand since: the row still says what was measured, and that its run is gone
            note = "; ".join(filter(None, [note, f"run directory missing: {', '.join(missing)}"]))
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     **{name: t.params.get(name) for name in names},
                     "epochs": t.user_attrs.get("epochs"), "params": t.user_attrs.get("params"),
                     "macs": t.user_attrs.get("macs"), "seconds_per_epoch": t.user_attrs.get("seconds_per_epoch"),
                     "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
                     "rejected": "rejected" in t.user_attrs,  # sampled, never trained: over budget or a repeat
                     "note": note, "runs": " ".join(str(run) for run in runs)})  # fmt: skip
    frame = pd.DataFrame(rows)
    for column in frame.columns:  # whole numbers stay whole (40, not 40.0) in a column with gaps (failed trials)
        present = [row[column] for row in rows if row[column] is not None]  # as recorded, before pandas' floats
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            frame[column] = frame[column].astype("Int64")
    return frame


def write_outputs(study, options: TuneOptions, space: list[Param]) -> dict[str, Any]:
    """trials.csv/md (rejected samples left out of the markdown), best.json (a config file train/finetune accept),
    a parameter-importance table and plots."""
    frame = trials_frame(study, options.folder)
    write_text_atomic(options.folder / "trials.csv", frame.to_csv(index=False))
    shown = frame[~frame["rejected"]].drop(columns=["rejected"])
    lines = [f"Study {options.study}: {len(shown)} trials ({(shown['state'] == 'complete').sum()} complete, "
             f"{(shown['state'] == 'pruned').sum()} pruned by trial pruning, {(shown['state'] == 'fail').sum()} "
             f"failed); score: best validation accuracy (mean over {options.repeats} seed(s)).", "",
             shown.drop(columns=["runs"]).to_markdown(index=False, floatfmt=".4g")]  # fmt: skip
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict[str, Any] = {"study": options.study, "folder": str(options.folder), "trials": len(shown),
                               "complete": len(complete), "files": {}}  # fmt: skip
    if len(complete) >= 2 and len(space) > 1:
        try:
            with warnings.catch_warnings():  # "importances will be equal" on tiny studies: the table shows it
                warnings.simplefilter("ignore")
                importance = optuna.importance.get_param_importances(study)
            lines += ["", "Parameter importance (Optuna's default evaluator):", "",
                      *markdown_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importance.items()])]
            summary["importance"] = importance
        except (RuntimeError, ValueError) as error:  # e.g. every trial had the same value
            lines += ["", f"Parameter importance: not computed ({error})."]
    if complete:
        best = study.best_trial
        run_path = run_of(options.folder, best.user_attrs["runs"][0])
        spec = RunDir(run_path).read_config().spec  # the first repeat's: what `train --config best.json` reruns
        write_json_atomic(options.folder / "best.json", spec)
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params, "spec": spec,
                           "run": str(run_path)}  # fmt: skip
        lines += ["", f"Best: trial {best.number}, val_acc {best.value:.4f}: "
                      f"{', '.join(f'{k}={_short(v)}' for k, v in best.params.items())}; "
                      f"`cnnbench train --config {options.folder / 'best.json'}` reruns it."]  # fmt: skip
        summary["files"].update(_plots(study, frame, options))
    write_text_atomic(options.folder / "trials.md", "\n".join(lines) + "\n")
    summary["files"].update({"csv": str(options.folder / "trials.csv"), "markdown": str(options.folder / "trials.md")})
    if complete:
        summary["files"]["best"] = str(options.folder / "best.json")
    return summary


def _plots(study, frame, options: TuneOptions) -> dict[str, str]:
    plt = plots.pyplot()
    files = {}
    done = frame[frame["state"] == "complete"].sort_values("trial")
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(done["trial"], done["value"], "o", label="trial")
    axis.plot(done["trial"], done["value"].cummax(), "-", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel("validation accuracy")
    axis.legend()
    axis.set_title(f"{options.study}: optimisation history")
    files["history"] = _save(figure, options.folder / "history.png")
    if done["params"].notna().any():
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.semilogx(done["params"], done["value"], "o")
        axis.set_xlabel("trainable parameters")
        axis.set_ylabel("validation accuracy")
        axis.set_title(f"{options.study}: accuracy against size")
        files["accuracy_vs_params"] = _save(figure, options.folder / "accuracy_vs_params.png")
    return files


def _save(figure, path: Path) -> str:
    figure.tight_layout()
    return str(plots.save(figure, path, dpi=120))
