"""The honest before/after of pruning: accuracy, parameters, sparsity per layer, MACs, size on disk, measured latency.

Sparsity alone says little: zeros in a dense tensor take the same bytes and the same multiply-accumulates. So each
model, the parent and every pruned child, gets the numbers that decide whether pruning paid:
- val and test accuracy (`evaluate_run`, the numbers `evaluate` prints and writes into the run's eval/ folder);
- parameters, nonzero parameters, weight sparsity, and per layer its weights, zeros and output width;
- MACs per image of the dense execution, and the MACs the nonzero weights alone would need (what a sparse kernel
  could at best save);
- the best checkpoint's bytes on disk, and gzip-compressed (zeros compress: what S3 meant by "smaller");
- inference latency at batch 1 and 64 on the measuring device, fp32, the median over rounds that time every model
  once (after warm-up), for the dense model and, where Linear layers were pruned, with those layers executed as CSR
  sparse-dense matmuls (PyTorch has no sparse convolution, so pruned convolutions run dense in both).
A sweep writes them as prune_report.csv, prune_report.md (with per-layer tables) and prune_report.png; each child run
also gets `prune.json` (its row and its layers), for `report` to read.
"""

from __future__ import annotations

import copy
import gzip
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnbench.core import plots
from cnnbench.engine import DEFAULT_THREADS, select_device
from cnnbench.evaluate.evaluation import evaluate_run
from cnnbench.models.accounting import count_macs, count_parameters
from cnnbench.models.pruning import PRUNABLE, prunable_layers
from cnnbench.runs.lock import RunLock
from cnnbench.runs.rundir import RunDir
from cnnbench.core.storage import write_json_atomic, write_text_atomic
from cnnbench.core.tables import markdown_table

logger = logging.getLogger(__name__)

LATENCY_BATCHES = (1, 64)
WARMUP_REPEATS = 2
# A large model at batch 64 on a CPU can take a second a pass: stop timing rounds after this long (at least 3 rounds).
LATENCY_SECONDS_CAP = 10.0
SAME_WITHIN = 0.05  # latencies closer than this are reported as no clear difference
REPORT_COLUMNS = ("run", "role", "method", "schedule", "amount", "target_macs", "channel_ratio", "layers",
                  "finetune_epochs", "val_accuracy",
                  "test_accuracy", "params", "nonzero_params", "sparsity", "pruned_layers_sparsity", "macs",
                  "macs_nonzero", "checkpoint_bytes", "checkpoint_gzip_bytes", "latency_ms_b1", "latency_ms_b64",
                  "csr_latency_ms_b1", "csr_latency_ms_b64", "csr_layers", "device", "threads", "path")  # fmt: skip


# --- per model --------------------------------------------------------------------------------------------------------


def layer_table(model: nn.Module, pruned_layers: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per convolution and dense layer: weights, zeros, sparsity, output width, and whether it was pruned."""
    rows = []
    for name, module in prunable_layers(model).items():
        weights = module.weight.numel()
        zeros = weights - int(torch.count_nonzero(module.weight.detach()))
        rows.append({"layer": name, "type": type(module).__name__, "weights": weights, "zeros": zeros,
                     "sparsity": zeros / weights if weights else 0.0,
                     "outputs": module.out_features if isinstance(module, nn.Linear) else module.out_channels,
                     "pruned": name in pruned_layers})  # fmt: skip
    return rows


def nonzero_macs(model: nn.Module, spec) -> int:
    """MACs per image if only the nonzero weights multiplied: each output position of a convolution or dense layer
    needs one MAC per nonzero weight of its output channel. Equals models.accounting.count_macs with no zeros."""
    macs = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        positions = output.numel() // module.weight.shape[0]  # output elements per output channel (batch of one)
        macs += positions * int(torch.count_nonzero(module.weight.detach()))

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, PRUNABLE)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, spec.channels, spec.height, spec.width, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return macs


class CsrLinear(nn.Module):
    """A pruned nn.Linear executed as a CSR sparse-dense matmul: y = (W_csr @ x^T)^T + b."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_csr = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if self.bias is not None:
            out = torch.addmm(self.bias.unsqueeze(1), self.weight_csr, rows.t()).t()
        else:
            out = (self.weight_csr @ rows.t()).t()
        return out.reshape(*x.shape[:-1], out.shape[-1])


def with_csr_linears(model: nn.Module, layers: list[str]) -> tuple[nn.Module, list[str]]:
    """A copy of `model` whose Linear layers among `layers` that hold zeros run as CSR matmuls; and their names."""
    import warnings

    replaced = [name for name in layers if isinstance(model.get_submodule(name), nn.Linear)
                and bool((model.get_submodule(name).weight == 0).any())]  # fmt: skip
    if not replaced:
        return model, []
    sparse = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # it works; the note is noise
        for name in replaced:
            parent_name, _, child = name.rpartition(".")
            setattr(sparse.get_submodule(parent_name), child, CsrLinear(sparse.get_submodule(name)))
    return sparse, replaced


@torch.inference_mode()
def latencies_ms(models: list[nn.Module], spec, batch: int, device: torch.device, repeats: int) -> list[float]:
    """Median milliseconds of one forward pass at `batch` (fp32, inference mode) of each model, after warm-up passes.

    The models are timed in rounds, one pass of each per round, not one model after the other: a burst of other work
    on the machine then lands on every model alike instead of on whichever was being timed (a 2 ms pass timed 20
    times in a row spans 40 ms, shorter than one burst), so the comparison holds even when the absolute figures do not.
    """
    x = torch.randn(batch, spec.channels, spec.height, spec.width, device=device)

    def once(model: nn.Module) -> float:
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for model in models:
        model.eval()
        for _ in range(WARMUP_REPEATS):
            once(model)
    times: list[list[float]] = [[] for _ in models]
    spent = 0.0
    while len(times[0]) < repeats and (len(times[0]) < 3 or spent < LATENCY_SECONDS_CAP):
        for model, samples in zip(models, times):
            samples.append(once(model))
            spent += samples[-1]
    return [statistics.median(samples) * 1000.0 for samples in times]


def measure_model(run: RunDir, *, pruned_layers: list[str]) -> dict[str, Any]:
    """Counts and sizes of a run's best checkpoint, rebuilt from its run directory alone; and the model, with its
    pruned Linear layers as CSR (`sparse`, None when it has none), for `latencies_ms`."""
    spec = run.read_config().model_spec()
    model = run.load_model("best")
    model.eval()
    counts = count_parameters(model)
    layers = layer_table(model, pruned_layers)
    chosen = [row for row in layers if row["pruned"]]
    checkpoint = run.checkpoint_path("best").read_bytes()
    chosen_sparsity = sum(r["zeros"] for r in chosen) / sum(r["weights"] for r in chosen) if chosen else None
    sparse, replaced = with_csr_linears(model, pruned_layers)
    row: dict[str, Any] = {
        "params": counts["trainable"] + counts["frozen"],
        "nonzero_params": counts["nonzero"],
        "sparsity": counts["sparsity"],
        "pruned_layers_sparsity": chosen_sparsity,
        "macs": count_macs(model, spec.input),
        "macs_nonzero": nonzero_macs(model, spec.input),
        "checkpoint_bytes": len(checkpoint),
        "checkpoint_gzip_bytes": len(gzip.compress(checkpoint, compresslevel=6, mtime=0)),
        "csr_layers": ",".join(replaced) or None,
    }
    return {"row": row, "layers": layers, "model": model, "sparse": sparse if replaced else None, "input": spec.input}


# --- the sweep's report -----------------------------------------------------------------------------------------------


def measure_and_report(outcome, options, *, device: str, root: Path | None, folder: Path | None) -> None:
    """Evaluate and measure the parent and every child of `outcome`, write each child's prune.json and (given a
    `folder`) the report; fills outcome.rows, layer_rows and report_dir. The latencies of all models are measured
    together (`latencies_ms`) with the same thread count, so that they compare."""
    torch_device = select_device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)  # fine-tuning may have chosen fewer for itself (autotune)
    try:
        parent = outcome.parent
        logger.info(f"evaluating and measuring {parent.name} and {len(outcome.runs)} pruned run(s) on "
                    f"{torch_device.type}")
        entries = [(parent, {"role": "parent", "amount": 0.0}, [])]
        for result in outcome.runs:
            pruning = result.run.read_config().pruning
            entries.append((result.run, {"role": "pruned", "method": pruning["method"], "schedule": pruning["schedule"],
                                         "amount": pruning["amount"], "layers": pruning["layers"],
                                         "finetune_epochs": options.finetune_epochs,
                                         "target_macs": pruning.get("target_macs"),
                                         "channel_ratio": pruning.get("channel_ratio")}, pruning["pruned_layers"]))
        rows, layer_rows, measured = [], [], []
        for run, facts, pruned_layers in entries:
            accuracy = {f"{split}_accuracy": _accuracy(run, split, device=device, root=root)
                        for split in ("val", "test")}  # fmt: skip
            measured.append(measure_model(run, pruned_layers=pruned_layers))
            rows.append({"run": run.name, **facts, **accuracy, **measured[-1]["row"], "device": torch_device.type,
                         "threads": DEFAULT_THREADS if torch_device.type == "cpu" else None, "path": str(run.path)})
            layer_rows += [{"run": run.name, "amount": facts["amount"], **layer} for layer in measured[-1]["layers"]]
        # every model (dense and CSR) in the same rounds; structured children differ in shape, not in input
        timed = [(index, variant, item[variant].to(torch_device)) for index, item in enumerate(measured)
                 for variant in ("model", "sparse") if item[variant] is not None]  # fmt: skip
        for batch in LATENCY_BATCHES:
            found = latencies_ms([model for _, _, model in timed], measured[0]["input"], batch, torch_device,
                                 options.repeats)  # fmt: skip
            for (index, variant, _), milliseconds in zip(timed, found):
                rows[index][f"{'csr_' if variant == 'sparse' else ''}latency_ms_b{batch}"] = milliseconds
        rows = [{column: row.get(column) for column in REPORT_COLUMNS} for row in rows]
        for (run, facts, _), row, item in zip(entries, rows, measured):
            if facts["role"] == "pruned":
                with RunLock(run.path):  # the run's own file, written as its trainer would: one writer at a time
                    write_json_atomic(run.path / "prune.json", {"parent": str(parent.path.resolve()), **row,
                                                                 "layer_table": item["layers"]})  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    outcome.rows, outcome.layer_rows = rows, layer_rows
    if folder is not None:
        outcome.report_dir = Path(folder)
        write_report(Path(folder), rows, layer_rows, title=f"Pruning {parent.name}: {options.method}, "
                                                           f"{options.schedule}")  # fmt: skip
        logger.info(f"report written: {Path(folder) / 'prune_report.md'} (+ .csv, .png)")


def _accuracy(run: RunDir, split: str, *, device: str, root: Path | None) -> float | None:
    """The run's accuracy on `split`, best checkpoint: an existing evaluation of it, else `evaluate_run` (which writes
    eval/<split>.json, as `cnnbench evaluate` would). None when the split is empty."""
    if run.read_config().prepared.get("counts", {}).get(split) == 0:
        return None
    existing = run.evaluations().get(split)
    evaluated = run.eval_dir() / f"{split}.json"
    # an evaluation of the best checkpoint as it is now (a run trained further since has a newer one)
    if (existing is not None and existing.get("checkpoint") == "best" and "accuracy" in existing
            and evaluated.stat().st_mtime >= run.checkpoint_path("best").stat().st_mtime):  # fmt: skip
        return existing["accuracy"]
    return evaluate_run(run.path, split=split, checkpoint="best", device=device, root=root)["accuracy"]


def write_report(folder: Path, rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]], *, title: str) -> None:
    """prune_report.csv (every column), prune_report.md (the readable table, when CSR pays, per-layer tables) and
    prune_report.png (accuracy and relative cost against the amount), each written atomically."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    table["finetune_epochs"] = table["finetune_epochs"].astype("Int64")  # a whole number, empty for the parent
    write_text_atomic(folder / "prune_report.csv", table.to_csv(index=False))
    write_text_atomic(folder / "prune_report.md", _markdown(table, pd.DataFrame(layer_rows), title))
    plots.save(_plot(plots.pyplot(), table, title), folder / "prune_report.png", dpi=120, tight=True)


def _markdown(table, layers, title: str) -> str:
    def number(value: Any, digits: int = 4) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"

    parent = table.iloc[0]
    lines = [f"# {title}", "", f"Parent: `{parent['path']}`. Latency: fp32 forward pass, median of repeats after "
             f"warm-up, on {parent['device']}" + (f" with {parent['threads']} threads" if parent["threads"] else "")
             + "; CSR = the pruned Linear layers as sparse-dense matmuls (convolutions stay dense).", ""]  # fmt: skip
    columns = ["run", "amount", "val acc", "test acc", "params", "nonzero", "sparsity", "MACs", "nonzero MACs",
              "checkpoint KB", "gzip KB", "ms b1", "ms b64", "CSR ms b1", "CSR ms b64"]
    lines += markdown_table(columns, [
        ["parent" if row["role"] == "parent" else row["run"], f"{row['amount']:g}", number(row["val_accuracy"]),
         number(row["test_accuracy"]), f"{row['params']:,}", f"{row['nonzero_params']:,}", f"{row['sparsity']:.3f}",
         f"{row['macs']:,}", f"{row['macs_nonzero']:,}", f"{row['checkpoint_bytes'] / 1e3:,.1f}",
         f"{row['checkpoint_gzip_bytes'] / 1e3:,.1f}", number(row["latency_ms_b1"], 3), number(row["latency_ms_b64"], 3),
         number(row["csr_latency_ms_b1"], 3), number(row["csr_latency_ms_b64"], 3)]
        for _, row in table.iterrows()])  # fmt: skip
    verdicts = []
    for _, row in table.iterrows():
        if row["role"] != "parent" and row["csr_layers"]:
            for batch in (1, 64):
                dense, sparse = row[f"latency_ms_b{batch}"], row[f"csr_latency_ms_b{batch}"]
                # repeated measurements on a shared machine differ by a few percent: closer than 5% is no verdict
                if abs(dense / sparse - 1.0) < SAME_WITHIN:
                    faster = f"no clear difference (within {SAME_WITHIN:.0%})"
                else:
                    faster = "CSR faster" if sparse < dense else "dense faster"
                verdicts.append(f"- amount {row['amount']:g}, batch {batch}: {faster} ({sparse:.3f} ms CSR vs "
                                f"{dense:.3f} ms dense, {dense / sparse:.2f}x)")  # fmt: skip
    if verdicts:
        lines += ["", "When sparsity pays (same pruned model, dense vs CSR Linear layers):", "", *verdicts]
    if len(layers):
        structured = (table["method"] == "structured").any()
        value, header = ("outputs", "output width") if structured else ("sparsity", "weight sparsity")
        wide = layers.pivot_table(index="layer", columns="amount", values=value, sort=False)
        first = layers.groupby("layer", sort=False).first()
        pruned = set(layers.loc[layers["pruned"], "layer"])
        lines += ["", f"Per layer: {header} by amount (0 = the parent); * = a pruned layer.", "",
                  *markdown_table(["layer", "weights (parent)", *(f"{a:g}" for a in wide.columns)], [
                      [f"{layer}{' *' if layer in pruned else ''}", f"{int(first.loc[layer, 'weights']):,}",
                       *(f"{int(v):,}" if structured else f"{v:.3f}" for v in values)]
                      for layer, values in wide.iterrows()])]  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(plt, table, title: str):
    table = table.sort_values("amount")
    parent = table[table["role"] == "parent"].iloc[0]
    figure, (accuracy, cost) = plt.subplots(1, 2, figsize=(11, 4))
    for column, label in (("test_accuracy", "test"), ("val_accuracy", "val")):
        if table[column].notna().any():
            accuracy.plot(table["amount"], table[column], marker="o", label=label)
    accuracy.set(xlabel="amount (0 = parent)", ylabel="accuracy")
    accuracy.legend()
    # each cost over the parent's: its gzip size, its nonzero MACs, its dense latency (the CSR curve's baseline too)
    for column, baseline, label in (("checkpoint_gzip_bytes", "checkpoint_gzip_bytes", "gzip size"),
                                    ("macs_nonzero", "macs_nonzero", "nonzero MACs"),
                                    ("latency_ms_b64", "latency_ms_b64", "latency b64, dense"),
                                    ("csr_latency_ms_b64", "latency_ms_b64", "latency b64, CSR")):  # fmt: skip
        values = table[column].astype(float)
        if values.notna().any() and parent[baseline]:
            shown = values.notna()
            cost.plot(table["amount"][shown], values[shown] / float(parent[baseline]), marker="o", label=label)
    cost.axhline(1.0, color="grey", linewidth=0.8)
    cost.set(xlabel="amount (0 = parent)", ylabel="cost relative to the parent")
    cost.legend()
    figure.suptitle(title)
    return figure
