"""Unit tests for the pieces of cnnbench.engine and cnnbench.spec.train that a training run is built from.

Learning-rate schedules, losses, regularised-layer selection, initialisation, early stopping, batching, configuration
precedence and device selection, each checked on small hand-made inputs without training a model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.spec.train import TrainConfig, validate_config
from cnnbench.spec.run import RunSpec, resolve
from cnnbench.data.prepare import SplitData
from cnnbench.engine import (
    OPTIMIZERS,
    EarlyStopping,
    InMemoryBatches,
    LRSchedule,
    batch_loss,
    initialise,
    penalized_weights,
    predicted,
    probabilities,
    resolve_precision,
    select_device,
)
from cnnbench.core.errors import UsageError
from cnnbench.models import build_model
from cnnbench.models.zoo import InputSpec

MNIST = InputSpec(channels=1, height=28, width=28, num_classes=10)


def schedule(steps_per_epoch: int = 10, **options) -> LRSchedule:
    options.setdefault("epochs", 10)
    return LRSchedule(TrainConfig(**options), steps_per_epoch)


def factors(s: LRSchedule) -> list[float]:
    return [s.factor(step) for step in range(s.total_steps)]


# --- LRSchedule -------------------------------------------------------------------------------------------------------


def test_constant_schedule_is_one_at_every_step():
    assert factors(schedule(schedule="constant")) == [1.0] * 100


def test_warmup_rises_linearly_over_warmup_epochs_then_holds():
    s = schedule(steps_per_epoch=10, schedule="constant", warmup_epochs=2)  # 20 warmup steps
    f = factors(s)

    assert f[0] == pytest.approx(1 / 20)
    assert f[19] == pytest.approx(1.0)
    steps = [b - a for a, b in zip(f[:20], f[1:20])]
    assert steps == pytest.approx([1 / 20] * 19)  # linear: equal increments
    assert all(0 < v < 1 for v in f[:19])
    assert f[20:] == [1.0] * 80


def test_fractional_warmup_epochs():
    s = schedule(steps_per_epoch=10, warmup_epochs=0.5)  # 5 steps
    assert [s.factor(i) for i in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_cosine_starts_at_one_decreases_and_ends_near_zero():
    s = schedule(steps_per_epoch=50, epochs=20, schedule="cosine")  # 1000 steps
    f = factors(s)

    assert f[0] == pytest.approx(1.0)
    assert f[500] == pytest.approx(0.5)
    assert f[-1] < 1e-4
    assert all(b <= a for a, b in zip(f, f[1:]))


def test_cosine_after_warmup_starts_its_decay_at_the_end_of_warmup():
    s = schedule(steps_per_epoch=10, epochs=10, schedule="cosine", warmup_epochs=2)
    f = factors(s)
    assert f[0] == pytest.approx(1 / 20)
    assert max(f) == pytest.approx(1.0, abs=1e-3)
    assert f.index(max(f)) in (19, 20)
    assert f[-1] < 1e-3


def test_step_schedule_halves_every_step_size_epochs():
    s = schedule(steps_per_epoch=4, epochs=9, schedule="step", step_size=3, gamma=0.5)
    per_epoch = [s.factor(epoch * 4 + 2) for epoch in range(9)]
    assert per_epoch == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])
    assert s.factor(11) == pytest.approx(1.0) and s.factor(12) == pytest.approx(0.5)  # decays at the epoch boundary


def test_onecycle_rises_from_a_25th_to_a_peak_at_30_percent_then_anneals_to_1e4():
    s = schedule(steps_per_epoch=100, epochs=10, schedule="onecycle", warmup_epochs=3)  # 1000 steps
    f = factors(s)

    assert f[0] == pytest.approx(1 / 25)
    peak = max(range(len(f)), key=f.__getitem__)
    assert f[peak] == pytest.approx(1.0)
    assert 280 <= peak <= 320
    assert all(b >= a for a, b in zip(f[:peak], f[1 : peak + 1]))  # rises...
    assert all(b <= a for a, b in zip(f[peak:], f[peak + 1 :]))  # ...then falls
    assert f[-1] == pytest.approx(1e-4, rel=0.1)


def test_plateau_decays_after_patience_epochs_without_improvement():
    s = schedule(schedule="plateau", plateau_patience=2, gamma=0.5)
    assert s.factor(0) == 1.0

    s.end_epoch(1.0)  # best
    s.end_epoch(0.8)  # better
    s.end_epoch(0.9)  # 1 bad epoch
    assert s.factor(30) == pytest.approx(1.0)
    s.end_epoch(0.85)  # 2 bad epochs: decay
    assert s.factor(40) == pytest.approx(0.5)
    s.end_epoch(0.9)
    assert s.factor(50) == pytest.approx(0.5)  # the count restarted after the decay
    s.end_epoch(0.9)
    assert s.factor(60) == pytest.approx(0.25)
    s.end_epoch(0.1)  # improvement resets, no further decay
    s.end_epoch(0.2)
    assert s.factor(70) == pytest.approx(0.25)


def test_plateau_ignores_nan_and_other_schedules_ignore_val_loss():
    s = schedule(schedule="plateau", plateau_patience=1, gamma=0.5)
    s.end_epoch(1.0)
    s.end_epoch(math.nan)
    assert s.factor(0) == 1.0

    constant = schedule(schedule="constant", plateau_patience=1, gamma=0.5)
    for loss in (1.0, 2.0, 3.0, 4.0):
        constant.end_epoch(loss)
    assert constant.factor(5) == 1.0


def test_plateau_state_round_trips_so_a_resumed_run_decays_at_the_same_epoch():
    a = schedule(schedule="plateau", plateau_patience=3, gamma=0.1)
    for loss in (1.0, 0.5, 0.6, 0.7):
        a.end_epoch(loss)
    a.end_epoch(0.6)  # third bad epoch: decay
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON, as a checkpoint's metadata would
    a.end_epoch(0.7)
    a.end_epoch(0.7)

    b = schedule(schedule="plateau", plateau_patience=3, gamma=0.1)
    b.load_state_dict(state)
    assert b.factor(0) == pytest.approx(0.1)
    assert b.state_dict() == state
    b.end_epoch(0.7)
    b.end_epoch(0.7)
    assert b.state_dict() == a.state_dict()
    b.end_epoch(0.7)
    assert b.factor(0) == pytest.approx(0.01)


# --- losses and predictions -------------------------------------------------------------------------------------------


def test_multiclass_loss_is_cross_entropy():
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(1))

    torch.testing.assert_close(batch_loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(batch_loss(logits, labels, label_smoothing=0.1),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))  # fmt: skip
    torch.testing.assert_close(batch_loss(logits, labels, reduction="sum"),
                               F.cross_entropy(logits, labels, reduction="sum"))  # fmt: skip


def test_loss_is_computed_in_float32_for_low_precision_logits():
    logits = torch.randn(8, 3).to(torch.bfloat16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss = batch_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), labels))


def test_one_logit_uses_binary_cross_entropy():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    labels = torch.tensor([1, 0, 0, 1])

    expected = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    torch.testing.assert_close(batch_loss(logits, labels), expected)
    by_hand = -(math.log(torch.sigmoid(torch.tensor(2.0))) + math.log(1 - torch.sigmoid(torch.tensor(-1.0)))
                + math.log(1 - torch.sigmoid(torch.tensor(0.5))) + math.log(torch.sigmoid(torch.tensor(-3.0)))) / 4
    assert float(batch_loss(logits, labels)) == pytest.approx(by_hand, rel=1e-5)
    torch.testing.assert_close(batch_loss(logits, labels, reduction="sum"), expected * 4)


def test_label_smoothing_moves_binary_targets_toward_one_half():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    labels = torch.tensor([1, 0, 0, 1])

    smoothed = batch_loss(logits, labels, label_smoothing=0.2)
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([0.9, 0.1, 0.1, 0.9]))
    torch.testing.assert_close(smoothed, expected)
    # Full smoothing makes every target 0.5.
    torch.testing.assert_close(batch_loss(logits, labels, label_smoothing=1.0),
                               F.binary_cross_entropy_with_logits(logits[:, 0], torch.full((4,), 0.5)))  # fmt: skip
    # A confident correct prediction is penalised more once the target is no longer exactly 1.
    sure = torch.tensor([[10.0]])
    assert float(batch_loss(sure, torch.tensor([1]), label_smoothing=0.2)) > float(batch_loss(sure, torch.tensor([1])))


def test_predictions_and_probabilities_for_one_logit():
    logits = torch.tensor([[2.0], [-1.0], [0.0], [0.3]])
    assert predicted(logits).tolist() == [1, 0, 0, 1]
    assert predicted(logits).dtype == torch.int64

    probs = probabilities(logits)
    assert probs.shape == (4, 2)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert probs.argmax(1).tolist() == [1, 0, 0, 1]  # agrees with predicted(), ties to class 0


def test_predictions_and_probabilities_for_k_logits():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert predicted(logits).tolist() == [1, 0, 2]

    probs = probabilities(logits)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(probs, torch.softmax(logits, 1))
    assert bool((probs > 0).all())


# --- penalized_weights and initialise ---------------------------------------------------------------------------------


def test_head_pattern_picks_only_the_head_linear_weights():
    model, _ = build_model("mnist-7498", MNIST)
    chosen = penalized_weights(model, "head.*")

    head_linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert len(head_linears) == 2
    assert [id(w) for w in chosen] == [id(m.weight) for m in head_linears]
    bias_and_bn = {id(p) for name, p in model.named_parameters() if not name.endswith("weight")}
    bias_and_bn |= {id(m.weight) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert not bias_and_bn & {id(w) for w in chosen}


def test_star_pattern_picks_every_conv_and_linear_weight_but_no_batchnorm():
    model, _ = build_model("mnist-7498", MNIST)
    chosen = {id(w) for w in penalized_weights(model, "*")}
    expected = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert chosen == expected and len(expected) == 5  # 3 convs + 2 dense
    assert {id(w) for w in penalized_weights(model, "features.*")} == {
        id(m.weight) for m in model.features if isinstance(m, nn.Conv2d)
    }


def test_frozen_layers_are_not_penalized():
    model, _ = build_model("mnist-7498", MNIST)
    model.head[1].weight.requires_grad_(False)
    assert [id(w) for w in penalized_weights(model, "head.*")] == [id(model.head[2].weight)]


@pytest.mark.parametrize("pattern", ["classifier.*", "head", "features.3"])  # features.3 is a BatchNorm
def test_pattern_matching_no_layer_is_a_usage_error(pattern):
    model, _ = build_model("mnist-7498", MNIST)
    with pytest.raises(UsageError, match=pattern.replace(".", r"\.")):
        penalized_weights(model, pattern)


def glorot_bound(weight: torch.Tensor) -> float:
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_glorot_zeroes_biases_and_keeps_weights_within_the_glorot_bound():
    torch.manual_seed(0)
    model, _ = build_model("mnist-7498", MNIST)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("features.3")}
    initialise(model, "glorot")

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        weight = layer.weight.detach()
        bound = glorot_bound(weight)
        assert float(weight.abs().max()) <= bound + 1e-7
        if weight.numel() >= 256:  # the draws really span the bound (uniform, not a narrower init)
            assert float(weight.abs().max()) > 0.9 * bound
        assert bool((layer.bias == 0).all())
    for key, value in bn_before.items():  # BatchNorm is left alone
        assert torch.equal(model.state_dict()[key], value)


def test_he_differs_from_glorot():
    model_glorot, _ = build_model("mnist-7498", MNIST)
    model_he, _ = build_model("mnist-7498", MNIST)
    torch.manual_seed(1)
    initialise(model_glorot, "glorot")
    torch.manual_seed(1)
    initialise(model_he, "he")

    conv_g, conv_h = model_glorot.features[4].weight.detach(), model_he.features[4].weight.detach()  # 8 -> 16 channels, 3x3
    assert not torch.allclose(conv_g, conv_h)
    he_bound = math.sqrt(6.0 / conv_h[0].numel())  # He-uniform: sqrt(6 / fan_in)
    assert float(conv_h.abs().max()) <= he_bound + 1e-7
    assert float(conv_h.abs().max()) > glorot_bound(conv_h)  # wider than Glorot allows, for a layer that widens
    assert bool((model_he.features[4].bias == 0).all())


def test_default_init_leaves_the_model_untouched():
    model, _ = build_model("mnist-7498", MNIST)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialise(model, "default")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- EarlyStopping ----------------------------------------------------------------------------------------------------


def test_val_loss_early_stopping_stops_after_patience_bad_epochs():
    early = EarlyStopping("val_loss", patience=2, min_delta=0.0)
    assert early.update(1, 1.0) == (True, False)
    assert early.update(2, 0.8) == (True, False)
    assert early.update(3, 0.9) == (False, False)
    assert early.update(4, 0.8) == (False, True)  # equal is not better; second bad epoch stops
    assert early.best_epoch == 2 and early.best == 0.8


def test_an_improvement_resets_the_patience_count():
    early = EarlyStopping("val_loss", patience=2, min_delta=0.0)
    early.update(1, 1.0)
    early.update(2, 1.1)
    assert early.update(3, 0.5) == (True, False)
    assert early.update(4, 0.6) == (False, False)
    assert early.update(5, 0.6) == (False, True)
    assert early.best_epoch == 3


def test_val_acc_monitor_treats_higher_as_better():
    early = EarlyStopping("val_acc", patience=1, min_delta=0.0)
    assert early.update(1, 0.5) == (True, False)
    assert early.update(2, 0.7) == (True, False)
    assert early.update(3, 0.6) == (False, True)
    assert early.best_epoch == 2 and early.best == 0.7


def test_min_delta_requires_a_large_enough_improvement():
    early = EarlyStopping("val_loss", patience=3, min_delta=0.1)
    early.update(1, 1.0)
    assert early.update(2, 0.95)[0] is False  # better by 0.05 < min_delta
    assert early.update(3, 0.85)[0] is True  # better than the best (1.0) by 0.15
    assert early.best_epoch == 3

    acc = EarlyStopping("val_acc", patience=3, min_delta=0.05)
    acc.update(1, 0.80)
    assert acc.update(2, 0.82)[0] is False
    assert acc.update(3, 0.90)[0] is True


def test_patience_zero_never_stops_but_still_tracks_the_best():
    early = EarlyStopping("val_loss", patience=0, min_delta=0.0)
    early.update(1, 0.5)
    for epoch in range(2, 20):
        assert early.update(epoch, 1.0 + epoch) == (False, False)
    assert early.best_epoch == 1


# --- InMemoryBatches --------------------------------------------------------------------------------------------------


def memory_batches(n: int = 10, batch_size: int = 4) -> InMemoryBatches:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return InMemoryBatches(SplitData(labels=torch.arange(n), images=images), batch_size, torch.device("cpu"))


def test_shuffled_epochs_visit_every_index_once_with_a_partial_last_batch():
    batches = memory_batches(10, 4)
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(3):
        got = list(batches.iterate(generator))
        assert [len(labels) for _, labels in got] == [4, 4, 2]
        for images, labels in got:
            assert images.shape[1:] == (1, 2, 2)
            assert torch.equal(images[:, 0, 0, 0].long(), labels)  # images stay paired with their labels
        order = torch.cat([labels for _, labels in got]).tolist()
        assert sorted(order) == list(range(10))
        orders.append(order)
    assert orders[0] != list(range(10))
    assert len({tuple(o) for o in orders}) > 1  # the generator advances between epochs


def test_the_same_seed_gives_the_same_order():
    batches = memory_batches(10, 3)
    first = [labels.tolist() for _, labels in batches.iterate(torch.Generator().manual_seed(5))]
    again = [labels.tolist() for _, labels in batches.iterate(torch.Generator().manual_seed(5))]
    assert first == again


def test_without_a_generator_the_order_is_kept():
    batches = memory_batches(10, 4)
    assert len(batches) == 3 and batches.num_images == 10
    assert [labels.tolist() for _, labels in batches.iterate(None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [labels.tolist() for _, labels in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_exact_multiple_has_no_empty_last_batch():
    batches = memory_batches(8, 4)
    assert len(batches) == 2
    assert [len(labels) for _, labels in batches.iterate(torch.Generator().manual_seed(0))] == [4, 4]


# --- configuration ----------------------------------------------------------------------------------------------------


def resolve_config(passed: dict, path=None) -> TrainConfig:
    """A flat, section-less file of training options (the format before run specifications) and training flags."""
    return resolve({f"train.{name}": value for name, value in passed.items()}, path).train


def test_flags_override_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 7, "lr": 0.01, "optimizer": "sgd"}))

    config = resolve_config({"lr": 0.5, "batch_size": None, "epochs": None}, path)

    assert config.lr == 0.5  # flag beats file
    assert config.epochs == 7 and config.optimizer == "sgd"  # file beats default
    assert config.batch_size == TrainConfig().batch_size  # None means "not passed"
    assert resolve_config({}) == TrainConfig()


def test_toml_config_file(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('epochs = 3\nschedule = "cosine"\naugment = "flip,rotate=10"\nlabel_smoothing = 0.1\n')
    config = resolve_config({"epochs": 4}, path)
    assert (config.epochs, config.schedule, config.augment, config.label_smoothing) == (4, "cosine", "flip,rotate=10", 0.1)


def test_unknown_key_in_the_file_is_named(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 3, "learning_rate": 0.1}))
    with pytest.raises(UsageError, match="learning_rate"):
        resolve_config({}, path)


def test_missing_and_malformed_config_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_config({}, tmp_path / "nope.json")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(UsageError, match="TOML"):
        resolve_config({}, bad)
    array = tmp_path / "list.json"
    array.write_text("[1, 2]")
    with pytest.raises(UsageError):
        resolve_config({}, array)


def test_values_in_the_file_are_validated(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"augment": "flip,spin=3"}))
    with pytest.raises(UsageError, match="spin=3"):
        resolve_config({}, path)


def test_a_wrongly_typed_value_in_the_file_is_a_usage_error(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": "5"}))
    with pytest.raises(UsageError, match="epochs"):
        resolve_config({}, path)


def test_validate_rejects_negative_epochs():
    with pytest.raises(UsageError, match="epochs"):
        validate_config(TrainConfig(epochs=-1))
    with pytest.raises(UsageError, match="epochs"):
        validate_config(TrainConfig(epochs=0))


def test_validate_rejects_an_unknown_optimizer_listing_the_choices():
    with pytest.raises(UsageError) as caught:
        validate_config(TrainConfig(optimizer="lion"))
    message = str(caught.value)
    assert "lion" in message
    for name in ("adam", "adamw", "sgd", "rmsprop"):
        assert name in message


@pytest.mark.parametrize("dropout", [1.0, -0.1, 1.5])
def test_validate_rejects_dropout_outside_zero_one(dropout):
    with pytest.raises(UsageError, match="dropout"):
        RunSpec().with_values({"model.dropout": dropout})


@pytest.mark.parametrize("options, name", [
    ({"schedule": "linear"}, "schedule"),
    ({"monitor": "train_loss"}, "monitor"),
    ({"lr": 0.0}, "lr"),
    ({"weight_decay": -1e-4}, "weight-decay"),
    ({"beta2": 1.0}, "beta2"),
    ({"clip_grad": 0.0}, "clip-grad"),
])  # fmt: skip
def test_validate_rejects_other_bad_values(options, name):
    with pytest.raises(UsageError, match=name):
        validate_config(TrainConfig(**options))


def test_validate_accepts_good_edge_values():
    config = TrainConfig(patience=0, warmup_epochs=0.0, label_smoothing=0.0, beta1=0.0)
    assert validate_config(config) is config
    assert RunSpec().with_values({"model.dropout": 0.0}).model.dropout == 0.0


# --- optimizers, devices and precision --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                        ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])  # fmt: skip
def test_optimizers_take_their_settings_from_the_config(name, kind):
    config = TrainConfig(optimizer=name, lr=0.05, weight_decay=1e-3, momentum=0.8, beta1=0.85, nesterov=True)
    optimizer = OPTIMIZERS[name]([{"params": [nn.Parameter(torch.zeros(3))]}], config, None)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, kind)
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-3
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.8
    else:
        assert group["betas"][0] == 0.85
    if name == "sgd":
        assert group["nesterov"] is True


def test_sgd_drops_nesterov_without_momentum():
    config = TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True)
    optimizer = OPTIMIZERS["sgd"]([{"params": [nn.Parameter(torch.zeros(3))]}], config, None)  # torch refuses nesterov here
    assert optimizer.param_groups[0]["nesterov"] is False


def test_auto_device_is_the_cpu_here():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is available")
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(UsageError, match="CUDA"):
        select_device("cuda")
    with pytest.raises(UsageError, match="CUDA"):
        select_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "gpu", "meta"])
def test_unknown_devices_are_usage_errors(name):
    with pytest.raises(UsageError, match=name):
        select_device(name)


def test_precision_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(UsageError, match="fp16"):
        resolve_precision("fp16", cpu)
