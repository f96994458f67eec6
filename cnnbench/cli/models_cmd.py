from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, cells, configure_logging, emit_json, stdout
from cnnbench.cli.options import data_values, with_options


@with_options("models")
def models(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Count parameters (with --probe: look the "
                                                 "choice up) at this dataset's shape instead of each model's seed "
                                                 "input.")] = None,
    probe: Annotated[str | None, typer.Option("--probe", metavar="MODEL", help="Show the CPU format this machine has "
                                               "cached for training MODEL at --dataset/--size and --batch-size "
                                               "(what `train` uses when --precision, --channels-last and --threads "
                                               "are not given).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="With --probe: the training batch size "
                                                   "(default: train's, 128).")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="With --probe: measure the choice again (about a "
                                          "second) and cache it.")] = False,
    json_output: JsonFlag = False,
    **options: Any,  # --size, --grayscale, --classes (cnnbench/spec/run.py OPTIONS)
) -> None:  # fmt: skip
    """List the model families, the zoo with parameter counts (PyTorch trainable and Keras-style totals) and MACs, and
    the torchvision backbones; or, with --probe MODEL, the CPU format probe's cached choice for a configuration."""
    from cnnbench.models.budget import dataset_input, describe_model, seed_input
    from cnnbench.models import FAMILIES, MODELS
    from cnnbench.models.transfer import describe_backbones

    shape = data_values(ctx, "models")  # size, grayscale, classes
    size, grayscale, classes = shape["size"], shape["grayscale"], shape["classes"]
    if dataset is None and (size is not None or grayscale or classes is not None):
        raise typer.BadParameter("--size, --grayscale and --classes need --dataset", param_hint="--dataset")
    if probe is None and (batch_size is not None or refresh):
        raise typer.BadParameter("--batch-size and --refresh need --probe MODEL", param_hint="--probe")
    spec = dataset_input(dataset, size=size, grayscale=grayscale, classes=classes) if dataset else None
    if probe is not None:
        _show_probe(probe, spec or seed_input(probe), batch_size, refresh, json_output)
        return
    rows = [describe_model(name, spec or MODELS.get(name).seed_input) for name in MODELS]
    families = [f"{name:<12} {FAMILIES.get(name).summary}" for name in FAMILIES]
    backbones, aliases = describe_backbones()
    if json_output:
        emit_json({"models": rows, "families": families, "backbones": backbones, "aliases": aliases})
        return
    table = Table()
    for column in ("name", "input", "trainable", "keras total", "MACs", "MB", "description"):
        table.add_column(column, justify="right" if column in ("trainable", "keras total", "MACs", "MB") else "left")
    for row in rows:
        table.add_row(*cells(row["name"], row["input"], f"{row['trainable']:,}", f"{row['keras_total']:,}",
                      f"{row['macs']:,}", f"{row['size_mb']:.2f}", row["description"]))  # fmt: skip
    console = stdout()
    console.print(table)
    console.print("Model families (`--model` takes a name from any of them):", markup=False)
    for line in families:
        console.print(line, markup=False)
    console.print("\nBackbones (the torchvision family; `cnnbench finetune` loads their ImageNet weights from "
                  "torch's cache or a download):", markup=False)
    listing = Table()
    for column in ("backbone", "feature params", "features", "blocks (for --freeze last:N / from:)", "weights file"):
        listing.add_column(column, justify="right" if column in ("feature params", "features") else "left")
    for row in backbones:
        listing.add_row(*cells(row["name"], f"{row['params']:,}", row["channels"], row["blocks"], row["weights_file"]))
    console.print(listing)
    for alias, note in aliases.items():
        console.print(f"{alias}: {note}")


def _show_probe(name: str, spec, batch_size: int | None, refresh: bool, json_output: bool) -> None:
    from cnnbench.engine.autotune import probe_report
    from cnnbench.spec.train import TrainConfig

    if spec is None:  # seed_input raised for an unknown name; None means the model is sized by its dataset
        raise typer.BadParameter(f"{name} is sized for a dataset; pass --dataset", param_hint="--dataset")
    if batch_size is not None and batch_size < 1:
        raise typer.BadParameter(f"bad --batch-size {batch_size}: expected 1 or more", param_hint="--batch-size")
    configure_logging(quiet=json_output)  # one JSON object on stdout, and no "measuring ..." line beside it
    report = probe_report(name, spec, batch_size or TrainConfig().batch_size, refresh=refresh)
    if json_output:
        emit_json(report)
        return
    console = stdout()
    entry, machine = report["entry"], report["machine"]
    console.print(f"{name} at {report['input']}, batch {report['batch_size']}, on {machine['cpu']} "
                  f"({', '.join(machine['flags']) or 'no AVX2/AVX-512/AMX'}; {machine['cores']} cores; torch "
                  f"{machine['torch']}, oneDNN {'on' if machine['onednn'] else 'off'})", markup=False)  # fmt: skip
    fresh = report.get("measured_now")
    if fresh is not None and not fresh["cached"]:
        console.print(f"measured now: {fresh['precision']}, {_layout(fresh['channels_last'])}, {fresh['threads']} "
                      f"threads, {fresh['promised_images_per_s']:,.0f} img/s; not cached: "
                      f"{fresh['not_cached_because']}", markup=False)  # fmt: skip
        if entry is not None:
            console.print("the cached choice is still the earlier one:", markup=False)
    if entry is None:
        console.print(f"no cached choice in {report['cache']}: the next `train` of this configuration measures it "
                      f"(or run this again with --refresh)", markup=False)  # fmt: skip
        return
    stale = entry["stale"]
    rows = [("precision", entry["precision"]), ("memory format", _layout(entry["channels_last"])),
            ("threads", entry["threads"]),
            ("promised", f"{entry['promised_images_per_s']:,.0f} img/s (training steps on a synthetic batch)")]
    rows += [(f"probed {candidate}", f"{rate:,.0f} img/s") for candidate, rate in entry["images_per_s"].items()]
    how = f"{entry['rounds']} rounds, windows within {entry['spread']:.2f}x"
    if entry["other_cores"] is not None:
        how += f", other processes {entry['other_cores']:.2f} cores"
    rows += [("measured", f"{entry['measured']} ({how})"),
             ("stale", f"yes: {stale['reason']} ({stale['at']}); the next run measures again" if stale else "no"),
             ("cache", f"{report['cache']} (entry {report['digest']})")]  # fmt: skip
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value")
    for row in rows:
        table.add_row(*cells(*row))
    console.print(table)


def _layout(channels_last: bool) -> str:
    return "channels_last" if channels_last else "contiguous"
