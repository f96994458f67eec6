"""`cnnbench prune`: prune a finished run (unstructured or structured), fine-tune each pruned model as a new run, and
report before and after. The fine-tuning takes `train`'s training options, each defaulting to the parent run's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, configure_logging, emit_json, stdout
from cnnbench.cli.options import parameter, splice, typed_on_command_line
from cnnbench.cli.progress import progress_display, show_result
from cnnbench.core.errors import UsageError
from cnnbench.spec.run import OPTIONS

_PRUNING, _FINETUNE, _RUN = "Pruning", "Fine-tuning (each default: the parent run's)", "Run"
# train's options a pruned run does not take: its epochs are --finetune-epochs, and the two-phase head training and
# feature cache of `finetune` do not apply (a pruned run trains the parent's architecture as one run).
_NOT_FOR_PRUNE = {"train.epochs", "train.head_epochs", "train.head_lr", "train.cache_features"}
_RENAMED = {"train.schedule": ("--lr-schedule",)}  # --schedule is the pruning schedule here (the name)


_TRAINING = [option for option in OPTIONS
             if option.name.startswith("train.") and "train" in option.commands and option.name not in _NOT_FOR_PRUNE]


def _with_training_options(command):
    """train's training options (the one table, cnnbench/spec/run.py), each defaulting to the parent run's."""
    return splice(command, [parameter(option, "train", flags=_RENAMED.get(option.name), panel=_FINETUNE,
                                      show_default="the parent's") for option in _TRAINING])  # fmt: skip


@_with_training_options
def prune(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="The run to prune (its best checkpoint); with --resume, an "
                                            "interrupted pruned run.", show_default=False)],
    method: Annotated[str, typer.Option("--method", help="magnitude (L1, per layer) | global (L1, one threshold over "
                                        "the chosen layers) | structured (remove channels, Torch-Pruning).",
                                        rich_help_panel=_PRUNING)] = "magnitude",
    layers: Annotated[str, typer.Option("--layers", help="Comma list of layer types (conv, linear) and module-name "
                                        "globs ('head.*', 'features.0', 'backbone.layer4').",
                                        rich_help_panel=_PRUNING)] = "conv,linear",
    amount: Annotated[str | None, typer.Option("--amount", help="Fraction of weights to zero (magnitude, global) or of "
                                               "channels to remove (structured); a comma list runs a sweep, e.g. "
                                               "0.5,0.7,0.9.", show_default=False, rich_help_panel=_PRUNING)] = None,
    target_macs: Annotated[str | None, typer.Option("--target-macs", help="structured: remove channels until at most "
                                                    "this many MACs per image (e.g. 2.5M; a comma list for several "
                                                    "runs).", show_default=False, rich_help_panel=_PRUNING)] = None,
    schedule: Annotated[str, typer.Option("--schedule", help="oneshot (prune, then fine-tune) | polynomial (TF-MOT's "
                                          "PolynomialDecay, power 3, from 0 to --amount while fine-tuning).",
                                          rich_help_panel=_PRUNING)] = "oneshot",
    frequency: Annotated[int, typer.Option("--frequency", help="polynomial: optimizer steps between mask updates.",
                                           rich_help_panel=_PRUNING)] = 100,
    schedule_epochs: Annotated[int | None, typer.Option("--schedule-epochs", help="polynomial: epochs over which the "
                                                        "sparsity rises; later epochs fine-tune at the final sparsity.",
                                                        show_default="all --finetune-epochs",
                                                        rich_help_panel=_PRUNING)] = None,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Epochs of fine-tuning each pruned model "
                                                 "(with --resume: the new total).", rich_help_panel=_PRUNING)] = 2,
    freeze: Annotated[str | None, typer.Option("--freeze", help="Freezing policy while fine-tuning: all | none | "
                                               "fraction:X | last:N | from:MODULE.", show_default="the parent's",
                                               rich_help_panel=_FINETUNE)] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Where the dataset lives now.", show_default="where the "
                                              "parent was trained", rich_help_panel=_RUN)] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Latency: timed rounds (each times every model once, after "
                                         "2 warm-up passes); the median is reported.", rich_help_panel=_RUN)] = 10,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Folder of prune_report.csv/.md/.png.",
                                                    show_default="OUT/prune-<parent>-<method>", rich_help_panel=_RUN)
                          ] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the pruned runs.",
                                      rich_help_panel=_RUN)] = Path("results/runs"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN_DIR, an interrupted pruned run, with its masks "
                                         "and schedule, then write its sweep's report again (only --finetune-epochs and "
                                         "--device may be given).",
                                         rich_help_panel=_RUN)] = False,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # train's training options (cnnbench/spec.py OPTIONS), None when not given
) -> None:
    """Prune a run's weights (magnitude, global or structured), fine-tune each pruned model as a new run, and report
    accuracy, size, MACs and measured latency before and after."""
    from cnnbench.prune.sweep import (
        PruneOptions,
        open_pruned,
        parse_amounts,
        parse_macs,
        prepare_prune,
        resume_pruned,
        run_prune,
    )

    configure_logging(quiet)
    typed = typed_on_command_line(ctx)
    if resume:
        allowed = {"run_dir", "resume", "finetune_epochs", "train__device", "repeats", "quiet", "json_output"}
        refused = sorted(f"--{name.split('__')[-1].replace('_', '-')}" for name in typed if name not in allowed)
        if refused:
            raise typer.BadParameter(f"--resume continues the run with its saved options; only --finetune-epochs, "
                                     f"--device and --repeats may be given (got {', '.join(refused)})",
                                     param_hint="--resume")  # fmt: skip
        open_pruned(run_dir)  # refusals first, before the progress display starts
        with progress_display(quiet) as progress:
            outcome = resume_pruned(run_dir, epochs=finetune_epochs if "finetune_epochs" in typed else None,
                                    device=options.get("train__device"), repeats=repeats, progress=progress)  # fmt: skip
        _finish(outcome, json_output)
        return
    if "frequency" in typed and schedule != "polynomial":
        raise UsageError("--frequency sets how often --schedule polynomial updates its masks; a one-shot prune has "
                         "none")
    train_values = {option.name: options[option.param] for option in _TRAINING if options.get(option.param) is not None}
    prune_options = PruneOptions(method=method, layers=layers, amounts=parse_amounts(amount) if amount else (),
                                 target_macs=parse_macs(target_macs) if target_macs else (), schedule=schedule,
                                 frequency=frequency, schedule_epochs=schedule_epochs, finetune_epochs=finetune_epochs,
                                 freeze=freeze, repeats=repeats, report_dir=report_dir)  # fmt: skip
    request = prepare_prune(run_dir, prune_options, train_values=train_values, root=root)  # refusals first
    with progress_display(quiet) as progress:
        outcome = run_prune(request, out=out, progress=progress)
    _finish(outcome, json_output)


def _finish(outcome, json_output: bool) -> None:
    if outcome.stopped is not None:  # the sweep ended early: report that run as train does (exit 130, 143 or 1)
        show_result(outcome.stopped, json_output=json_output)
        return
    if json_output:
        emit_json({"parent": str(outcome.parent.path), "runs": [str(r.run.path) for r in outcome.runs if r.run],
                   "report_dir": str(outcome.report_dir) if outcome.report_dir else None, "rows": outcome.rows})
        return
    _show(outcome)


def _show(outcome) -> None:
    if not outcome.rows:  # resumed, with its parent gone: nothing was measured
        show_result(outcome.runs[-1], json_output=False)
        return
    console = stdout()
    table = Table(title=f"pruning {outcome.parent.name}")
    for column in ("run", "amount", "val acc", "test acc", "nonzero params", "sparsity", "nonzero MACs", "gzip KB",
                   "ms b1", "ms b64", "CSR ms b64"):  # fmt: skip
        table.add_column(column, justify="left" if column == "run" else "right")

    def number(value: Any, digits: int) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    for row in outcome.rows:
        table.add_row(*cells("parent" if row["role"] == "parent" else row["run"], f"{row['amount']:g}",
                             number(row["val_accuracy"], 4), number(row["test_accuracy"], 4),
                             f"{row['nonzero_params']:,}", f"{row['sparsity']:.3f}", f"{row['macs_nonzero']:,}",
                             f"{row['checkpoint_gzip_bytes'] / 1e3:,.1f}", number(row["latency_ms_b1"], 3),
                             number(row["latency_ms_b64"], 3), number(row["csr_latency_ms_b64"], 3)))  # fmt: skip
    console.print(table)
    if outcome.report_dir is None:
        console.print(f"written: {outcome.runs[-1].run.path / 'prune.json'}", markup=False)
    else:
        console.print(f"written: {outcome.report_dir / 'prune_report.md'} (+ .csv, .png); pruned runs under "
                      f"{outcome.runs[0].run.path.parent}", markup=False)  # fmt: skip
