"""`prune`: exact unstructured sparsity, TF-MOT's polynomial schedule, masks kept while fine-tuning and across a resume,
structured pruning that rebuilds from a run directory, the before/after report, and one-line usage errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models import InputSpec, ModelSpec, build, resolve
from cnnbench.models.accounting import count_macs, count_parameters
from cnnbench.engine.sparsity import PolynomialPlan, SparseFineTune, is_update_step, polynomial_sparsity
from cnnbench.models.pruning import classifier_output_layer, prune_channels, select_layers, sparsify
from cnnbench.prune.sweep import PruneOptions, prune_run, resume_pruned
from cnnbench.runs.rundir import RunDir
from tests.helpers import StopAfter, copy_run

MNIST = InputSpec(channels=1, height=28, width=28, num_classes=10)
# A pruned and briefly fine-tuned model may lose at most this much test accuracy against its parent (digits, 359 test
# images: 0.03 is about 11 images).
ACCURACY_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def parent(trained_run, tmp_path_factory) -> RunDir:
    """A mnist-7498 run on digits at 28x28: about 0.95 test accuracy in 5 epochs (a second or two). A copy of the
    session's shared run, for this module alone: measuring a sweep evaluates its parent into the parent's eval/."""
    shared = trained_run("mnist-7498", epochs=5, lr=3e-3, batch_size=64)
    return RunDir.open(copy_run(shared, tmp_path_factory.mktemp("parent")))


def zeros(tensor: torch.Tensor) -> int:
    return tensor.numel() - int(torch.count_nonzero(tensor))


def weights_of(state: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    return state[f"{layer}.weight"]


# --- unstructured: exact sparsity on the chosen layers --------------------------------------------------------------


def test_magnitude_pruning_zeroes_exactly_the_target_in_each_chosen_layer_and_nothing_else():
    torch.manual_seed(0)
    model = build(resolve("mnist-7498", MNIST))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = select_layers(model, "head.*", model_name="mnist-7498")
    assert layers == ["head.1", "head.2"]
    sparsify(model, layers, 0.8, method="magnitude")
    state = model.state_dict()
    for layer in layers:
        weight = weights_of(state, layer)
        assert zeros(weight) == round(0.8 * weight.numel())
        kept = weight != 0
        # the smallest magnitudes went: every kept weight is at least as large as every pruned one
        assert before[f"{layer}.weight"][kept].abs().min() >= before[f"{layer}.weight"][~kept].abs().max()
        assert torch.equal(state[f"{layer}.bias"], before[f"{layer}.bias"])  # biases untouched
    for layer in ("features.0", "features.4", "features.8"):
        assert torch.equal(weights_of(state, layer), before[f"{layer}.weight"])  # untouched layers stay dense


def test_global_pruning_hits_the_target_over_the_chosen_layers_together():
    torch.manual_seed(0)
    model = build(resolve("mnist-7498", MNIST))
    layers = select_layers(model, "conv", model_name="mnist-7498")
    assert layers == ["features.0", "features.4", "features.8"]
    sparsify(model, layers, 0.7, method="global")
    counts = [(zeros(model.get_submodule(n).weight), model.get_submodule(n).weight.numel()) for n in layers]
    assert sum(z for z, _ in counts) == round(0.7 * sum(n for _, n in counts))
    assert len({round(z / n, 3) for z, n in counts}) > 1  # one threshold: layers end at different sparsities
    assert zeros(model.get_submodule("head.1").weight) == 0


def test_layers_take_types_globs_and_module_names_and_refuse_what_the_model_lacks():
    model = build(resolve("mnist-7498", MNIST))
    assert select_layers(model, "head", model_name="m") == ["head.1", "head.2"]  # a module selects its layers
    assert select_layers(model, "features.0,linear", model_name="m") == ["features.0", "head.1", "head.2"]
    with pytest.raises(UsageError, match="'backbone.*' matches no convolution or dense layer of m; its layers are"):
        select_layers(model, "head.*,backbone.*", model_name="m")
    assert classifier_output_layer(model) == "head.2"


# --- the polynomial schedule ------------------------------------------------------------------------------------------


def test_polynomial_schedule_follows_tf_mot_formula_and_ends_at_the_final_sparsity():
    begin, end, final = 0, 200, 0.8
    assert polynomial_sparsity(begin, begin=begin, end=end, final=final) == 0.0
    assert polynomial_sparsity(end, begin=begin, end=end, final=final) == pytest.approx(final)
    assert polynomial_sparsity(end + 50, begin=begin, end=end, final=final) == pytest.approx(final)  # held after
    for step in (1, 37, 100, 150, 199):
        p = step / end
        assert polynomial_sparsity(step, begin=begin, end=end, final=final) == pytest.approx(final * (1 - (1 - p) ** 3))
    assert polynomial_sparsity(50, begin=0, end=100, final=0.9, initial=0.5) == pytest.approx(0.9 - 0.4 * 0.5**3)
    updates = [s for s in range(260) if is_update_step(s, begin=begin, end=end, frequency=30)]
    assert updates == [0, 30, 60, 90, 120, 150, 180, 200]  # every 30 steps, and the window's last step


class _Batches(list):
    """len() is what the callback reads: optimizer steps per epoch."""


def test_sparse_finetune_callback_follows_the_schedule_and_keeps_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))
    trainer = SimpleNamespace(model=model, step=0, epoch=0, train_batches=_Batches(range(5)),
                              early=SimpleNamespace(best=0.3, bad_epochs=2))  # fmt: skip
    schedule = PolynomialPlan(final=0.75, frequency=3, epochs=2)  # window: 10 steps
    callback = SparseFineTune(["0"], method="magnitude", schedule=schedule)
    callback.on_fit_start(trainer)
    weight = model[0].weight
    assert zeros(weight) == 0  # initial sparsity 0
    expected = 0
    for step in range(1, 13):
        loss = model(torch.randn(8, 40)).pow(2).sum()
        loss.backward()
        assert zeros(weight.grad[weight == 0]) == int((weight == 0).sum())  # pruned weights get no gradient
        with torch.no_grad():
            weight.add_(torch.randn_like(weight))  # an optimizer step that would move every weight
            weight.grad = None
        trainer.step = step
        callback.on_step_end(trainer)
        if is_update_step(step, begin=0, end=10, frequency=3):
            expected = round(weight.numel() * polynomial_sparsity(step, begin=0, end=10, final=0.75))
        assert zeros(weight) == expected, step
        if step == 5:  # an epoch that ends inside the ramp: early stopping forgets its best
            callback.on_epoch_end(trainer, None)
            assert math.isnan(trainer.early.best) and trainer.early.bad_epochs == 0
    assert zeros(weight) == round(0.75 * weight.numel())  # the final sparsity at the end of the window, and after
    assert zeros(model[2].weight) == 0


# --- runs: unstructured ---------------------------------------------------------------------------------------------


def test_a_sweep_writes_pruned_runs_that_load_into_the_plain_model_and_an_honest_report(parent, cli, tmp_path):
    out = tmp_path / "runs"
    result = cli("prune", parent.path, "--amount", "0.5,0.8", "--layers", "head.*", "--finetune-epochs", "2",
                 "--out", out, "--repeats", "2", "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    document = result.json()
    rows = document["rows"]
    assert [row["role"] for row in rows] == ["parent", "pruned", "pruned"]
    assert [row["amount"] for row in rows] == [0.0, 0.5, 0.8]
    table = cli("report", out, "--out", tmp_path / "report", "--columns", "run,params,nonzero_params,sparsity",
                "--json").json()["rows"]
    # report shows the pruned runs' real counts (only the head is pruned: the whole model's sparsity is lower)
    assert len(table) == 2
    assert all(0 < r["sparsity"] < 0.5 and r["nonzero_params"] < r["params"] for r in table), table
    for row, run_path in zip(rows[1:], document["runs"]):
        run = Path(run_path)
        config = json.loads((run / "config.json").read_text())
        assert config["kind"] == "prune" and config["parent"] == str(parent.path.resolve())
        assert config["pruning"]["pruned_layers"] == ["head.1", "head.2"]
        assert set(config["pruning"]["skipped"]) == {"features.0", "features.4", "features.8"}
        model = build(ModelSpec.from_dict(config["model"]))
        for checkpoint in ("best", "last"):  # every saved state dict is the plain architecture's
            state = torch.load(run / "checkpoints" / f"{checkpoint}.pt", weights_only=True)["model"]
            model.load_state_dict(state, strict=True)
            for layer in ("head.1", "head.2"):
                assert zeros(weights_of(state, layer)) == round(row["amount"] * weights_of(state, layer).numel())
            assert zeros(weights_of(state, "features.8")) == 0
        assert row["pruned_layers_sparsity"] == pytest.approx(row["amount"], abs=1e-3)
        assert row["nonzero_params"] < rows[0]["nonzero_params"] and row["params"] == rows[0]["params"]
        assert row["macs_nonzero"] < row["macs"] == rows[0]["macs"]
        assert row["checkpoint_gzip_bytes"] < rows[0]["checkpoint_gzip_bytes"]
        assert row["csr_layers"] == "head.1,head.2" and row["csr_latency_ms_b64"] > 0
        assert json.loads((run / "prune.json").read_text())["amount"] == row["amount"]
        assert (run / "eval" / "test.json").is_file()  # evaluated like `cnnbench evaluate` does
    assert rows[1]["test_accuracy"] >= rows[0]["test_accuracy"] - ACCURACY_TOLERANCE
    folder = Path(document["report_dir"])
    assert folder == out / f"prune-{parent.name}-magnitude"
    assert len((folder / "prune_report.csv").read_text().splitlines()) == 4
    assert "When sparsity pays" in (folder / "prune_report.md").read_text()
    assert (folder / "prune_report.png").read_bytes()[:4] == b"\x89PNG"


def whole_and_interrupted(parent, tmp_path):
    """The same polynomial pruning run twice: uninterrupted, and stopped by Ctrl-C after its first epoch."""
    options = PruneOptions(method="global", layers="conv,linear", amounts=(0.7,), schedule="polynomial", frequency=4,
                           finetune_epochs=2)  # fmt: skip
    values = {"train.batch_size": 256}
    whole = prune_run(parent.path, options, train_values=values, out=tmp_path / "whole", measure=False).runs[0]
    stopped = prune_run(parent.path, options, train_values=values, out=tmp_path / "cut", callbacks=[StopAfter(1)],
                        measure=False).runs[0]  # fmt: skip
    return whole, stopped


def test_an_interrupted_polynomial_run_resumes_with_its_masks_exactly(parent, tmp_path):
    whole, stopped = whole_and_interrupted(parent, tmp_path)
    assert stopped.status == "interrupted"
    resumed = resume_pruned(stopped.run.path, measure=False).runs[0]
    assert resumed.status == "completed"
    for checkpoint in ("best", "last"):
        a = whole.run.load_checkpoint(checkpoint)["model"]
        b = resumed.run.load_checkpoint(checkpoint)["model"]
        assert all(torch.equal(a[key], b[key]) for key in a), checkpoint
    state = resumed.run.load_checkpoint("best")["model"]
    chosen = [k for k in state if k.endswith(".weight") and state[k].dim() >= 2]
    assert sum(zeros(state[k]) for k in chosen) == round(0.7 * sum(state[k].numel() for k in chosen))
    assert resumed.run.load_checkpoint("best")["epoch"] == 2  # the best epoch is one at the final sparsity


def test_train_resume_of_an_interrupted_pruned_run_keeps_its_masks(parent, cli, tmp_path):
    """`cnnbench train --resume` (what an interrupted run prints) continues a pruned run as `prune --resume` does."""
    whole, stopped = whole_and_interrupted(parent, tmp_path)
    assert cli("train", "--resume", stopped.run.path, "--quiet").code == 0
    a, b = whole.run.load_checkpoint("last")["model"], stopped.run.load_checkpoint("last")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


# --- structured -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, spec_in", [
    ("resnet18", InputSpec(channels=3, height=32, width=32, num_classes=10)),
    ("catsdogs-base", InputSpec(channels=3, height=32, width=32, num_classes=2)),  # S4's single sigmoid logit
    ("fit:7500", MNIST),
])  # fmt: skip
def test_structured_pruning_narrows_the_model_and_the_rebuilt_model_predicts_the_same(name, spec_in, tmp_path):
    torch.manual_seed(0)
    model_spec = resolve(name, spec_in)
    model = build(model_spec).eval()
    layers = select_layers(model, "conv,linear", model_name=name)
    before = count_parameters(model)["trainable"], count_macs(model, spec_in)
    pruned = prune_channels(model, model_spec, layers, ratio=0.5)  # `model` is narrowed in place
    child = pruned.model.eval()
    assert count_parameters(child)["trainable"] < before[0] / 2 and count_macs(child, spec_in) < before[1] / 2
    output = child.get_submodule(pruned.output_layer)
    assert output.out_features == (1 if name == "catsdogs-base" else 10)  # the classifier keeps its classes
    x = torch.randn(4, spec_in.channels, spec_in.height, spec_in.width)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(child(x), expected, atol=1e-5)
    # what a run directory holds: the spec as JSON and a plain state dict
    (tmp_path / "model.json").write_text(json.dumps(pruned.spec.to_dict()))
    torch.save(child.state_dict(), tmp_path / "weights.pt")
    rebuilt = build(ModelSpec.from_dict(json.loads((tmp_path / "model.json").read_text()))).eval()
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), expected, atol=1e-5)


def test_a_structured_run_reloads_from_its_run_directory_with_fewer_parameters(parent, tmp_path):
    options = PruneOptions(method="structured", amounts=(0.4,), finetune_epochs=1)
    outcome = prune_run(parent.path, options, out=tmp_path, measure=False)
    run = outcome.runs[0].run
    config = run.config()
    assert config["pruning"]["skipped"] == {"head.2": "the classifier's output layer (pruning it would remove "
                                                      "classes)"}  # fmt: skip
    # Torch-Pruning keeps int(n x (1 - ratio)) channels of each layer: 4 of features.0's 8, 19 of head.1's 32
    assert config["model"]["options"]["widths"]["features.0"] == {"out_channels": 4}
    assert config["model"]["options"]["widths"]["head.1"] == {"in_features": 19, "out_features": 19}
    model = build(ModelSpec.from_dict(config["model"]))
    model.load_state_dict(run.load_checkpoint("best")["model"], strict=True)
    assert config["params"]["trainable"] < parent.config()["params"]["trainable"]
    assert config["params"]["macs"] < parent.config()["params"]["macs"]


def test_a_macs_target_is_met(parent, tmp_path):
    from cnnbench.models.accounting import count_macs

    config = parent.config()
    model_spec = ModelSpec.from_dict(config["model"])
    model = build(model_spec)
    target = count_macs(model, model_spec.input) // 3
    pruned = prune_channels(model, model_spec, select_layers(model, "conv,linear", model_name="m"), target_macs=target)
    assert count_macs(pruned.model, model_spec.input) <= target and 0 < pruned.channel_ratio < 1


# --- usage errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--layers", "head.*,classifier.*"], "--layers 'classifier.*' matches no convolution or dense layer"),
    (["--amount", "1.5"], "bad --amount '1.5': expected fractions strictly between 0 and 1"),
    (["--amount", "0"], "bad --amount '0'"),
    (["--amount", "0.5,x"], "bad --amount 'x'"),
    (["--method", "structured", "--schedule", "polynomial"], "--schedule polynomial is for unstructured pruning"),
    (["--target-macs", "1M"], "--target-macs is for --method structured"),
    (["--method", "prune"], "bad --method 'prune'"),
    (["--frequency", "10"], "--frequency sets how often --schedule polynomial updates its masks"),
    (["--schedule-epochs", "1"], "--schedule-epochs sets the window of --schedule polynomial"),
    (["--resume"], "is a train run, not a pruned one; resume it with `cnnbench train --resume"),
    (["--resume", "--lr", "0.1"], "only --finetune-epochs, --device and --repeats may be given (got --lr)"),
])  # fmt: skip
def test_bad_input_exits_2_with_one_line(parent, cli, tmp_path, args, message):
    if "--resume" not in args:  # --resume takes neither an amount nor --out
        given = "--target-macs" in args or "--amount" in args
        args = [*args, "--out", tmp_path, *([] if given else ["--amount", "0.5"])]
    result = cli("prune", parent.path, *args)
    assert result.code == 2
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert not any(tmp_path.iterdir())  # refused before any run directory was made


def test_a_missing_run_directory_exits_2_with_one_line(cli, tmp_path):
    result = cli("prune", tmp_path / "no-such-run", "--amount", "0.5", "--json")
    assert result.code == 2 and result.err.count("\n") == 1 and "is not a run directory" in result.err
    assert result.json()["exit_code"] == 2
