from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.cli.common import JsonFlag, QuietFlag, configure_logging, emit_json, stdout
from cnnbench.cli.options import passed_values, typed_on_command_line, with_spec_options
from cnnbench.cli.progress import progress_display

_P = "Search"


@with_spec_options("tune", out=False)  # a study goes to --folder; an --out would be ignored
def tune(
    ctx: typer.Context,
    space: Annotated[str, typer.Option("--space", help="A built-in space (s3, s4, arch) or a TOML/JSON file of "
                                       "dotted names with ranges.", rich_help_panel=_P)] = "arch",
    n_trials: Annotated[int, typer.Option("--n-trials", help="The study's total of finished and running trials, "
                                          "however many processes share it.", rich_help_panel=_P)] = 20,
    sampler: Annotated[str, typer.Option("--sampler", help="random | tpe | grid", rich_help_panel=_P)] = "random",
    pruner: Annotated[str, typer.Option("--pruner", help="Trial pruning (stop hopeless trials early, fed by each "
                                        "epoch's val_acc): none | median (below the median of the trials before "
                                        "it, once 5 have completed) | hyperband (ASHA brackets from the warm-up to "
                                        "--epochs)", rich_help_panel=_P)] = "none",
    pruner_warmup: Annotated[int | None, typer.Option("--pruner-warmup", help="Epochs a trial trains before trial "
                                                      "pruning may stop it.", show_default="a quarter of --epochs, "
                                                      "at least 2", rich_help_panel=_P)] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Train each configuration K times (seeds seed, seed+1, "
                                         "...) and score the mean.", rich_help_panel=_P)] = 1,
    study: Annotated[str | None, typer.Option("--study", help="Study name; running the same command again continues "
                                              "it.", show_default="the space's name", rich_help_panel=_P)] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="A database URL (postgresql://...) shared by "
                                                "workers on many machines.",
                                                show_default="a journal file in results/tune/STUDY",
                                                rich_help_panel=_P)] = None,
    max_macs: Annotated[int | None, typer.Option("--max-macs", help="Reject (without training) architectures "
                                                 "needing more MACs per image.", show_default="no limit",
                                                 rich_help_panel=_P)] = None,
    retrain_best: Annotated[bool, typer.Option("--retrain-best", help="Finally train the best configuration on "
                                               "train+val and evaluate it once on test.", rich_help_panel=_P)] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild a damaged or lost study.journal from the "
                                          "study's trial run directories (the old journal is kept beside it), then "
                                          "go on.", rich_help_panel=_P)] = False,
    folder: Annotated[Path | None, typer.Option("--folder", help="The study's folder.",
                                                show_default="results/tune/STUDY", rich_help_panel=_P)] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # the run specification's options (cnnbench/spec.py OPTIONS): the trials' base configuration
) -> None:
    """Search hyper-parameters or architectures: every trial an ordinary run directory, the study resumable."""
    from cnnbench.spec.run import base_for, resolve
    from cnnbench.search import TuneOptions, load_space
    from cnnbench.search import tune as run_study

    passed = passed_values(ctx, "tune")
    # --backbone (or --weights) makes the trials fine-tunes; --model and --backbone both name model.name
    backbone = ctx.params["model__name__backbone"] if "model__name__backbone" in typed_on_command_line(ctx) else None
    if backbone:
        passed["model.name"] = backbone
    kind = "finetune" if backbone or "model.weights" in passed else "train"
    base = resolve(passed, options["config"], base=base_for(kind))
    space_name, params = load_space(space)
    name = space_name if study is None else study  # an empty --study is refused, not replaced
    tune_options = TuneOptions(study=name, folder=folder or Path("results/tune") / name, storage=storage,
                               n_trials=n_trials, sampler=sampler, pruner=pruner, repeats=repeats, seed=base.train.seed,
                               max_params=base.train.max_params, max_macs=max_macs, retrain_best=retrain_best,
                               rebuild=rebuild, pruner_warmup=pruner_warmup)
    configure_logging(quiet)

    summary = run_study(base, space_name, params, tune_options,
                        progress=lambda label: progress_display(quiet, label=label))
    if json_output:
        emit_json({k: v for k, v in summary.items() if k != "importance"} | {"importance": summary.get("importance")})
        return
    console = stdout()
    console.print((Path(summary["files"]["markdown"])).read_text(), markup=False)
    console.print(f"study folder: {summary['folder']}", markup=False)
    if "retrained" in summary:
        r = summary["retrained"]
        console.print(f"best configuration retrained on train+val ({r['epochs']} epochs): test accuracy "
                      f"{r['test_accuracy']:.4f}  ({r['run']})", markup=False)  # fmt: skip
