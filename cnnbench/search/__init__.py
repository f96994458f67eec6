"""`tune`: hyper-parameter and architecture search over run specifications, on Optuna (the only package importing it).

A search space names fields of the run specification by their dotted names (`train.lr`, `model.head.units`,
`model.arch.width`) with typed ranges. Each trial is one or more ordinary run directories (`--repeats K` trains K
seeds and scores their mean), so `evaluate` and `report` work on trials as on any run; the trial's number and
parameters are in each run's config.json.

Nothing is lost and nothing is counted twice:
- The study lives in a journal file under the study's folder (or any database URL Optuna takes, with `--storage`);
  running the same command again continues it.
- Trials are started with Optuna's ask/tell under a study-wide lock that counts the trials finished and in flight
  first, so `--n-trials` is the study's total however many processes (or machines) share it.
- A trial cut short by Ctrl-C, SIGTERM or an exception is told as FAIL and its parameters are queued again; one cut
  short with no chance to say so (SIGKILL, a dead machine) is found by the next process from its recorded host, pid and
  heartbeat, failed and queued again. A failed trial never counts towards the total.
- An architecture over `--max-params` or `--max-macs` is rejected from its closed-form count before anything is
  built; a rejected or repeated configuration does not use up the trial count either.

Trial pruning (stopping a hopeless trial early: median, hyperband) is fed each epoch's validation accuracy by an
engine callback; it is not weight pruning (`cnnbench prune`).

The modules, by job (as Optuna splits samplers, pruners and storages):

    options.py        TuneOptions, what one search is asked to do, and their check
    space.py          search spaces (built-in or a TOML/JSON file), a trial's spec, an arch's closed-form budget
    storage.py        opening the study on its storage, with its sampler and pruner; the study lock; dead trials
    trial_pruning.py  the per-epoch engine callback that reports to Optuna and stops pruned trials
    loop.py           the tune loop: ask, reject, train, tell
    outputs.py        trials.csv/md, parameter importance, best.json, plots
    retrain.py        --retrain-best: the best configuration on train+val, tested once

This face re-exports what code outside the package uses; inside it, modules import each other directly.
"""

from cnnbench.search.loop import tune
from cnnbench.search.options import TuneOptions
from cnnbench.search.space import load_space, parse_space
from cnnbench.search.storage import open_study

__all__ = ["TuneOptions", "load_space", "open_study", "parse_space", "tune"]
