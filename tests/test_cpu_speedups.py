"""CPU speed-ups that must not change results: the fast Dropout, fp32 dense layers under bf16 autocast, and the
allocator setting that keeps freed activations for reuse."""

import copy
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.engine import dense_layers_in_fp32
from cnnbench.models import native
from cnnbench.models.layers import BatchNorm2d, Dropout, MaxPool2d


def test_dropout_drops_the_requested_fraction_and_keeps_the_expected_value():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    out = Dropout(0.3).train()(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003  # 400k samples: 6 standard deviations is 0.0043
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7), rtol=1e-4)
    assert abs(out.mean().item() - 1.0) < 0.01


def test_dropout_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(8, 5, 6, 7, requires_grad=True)
    out = Dropout(0.5).train()(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    expected = (out != 0).float() * 2.0
    assert torch.allclose(grad, expected)


def test_dropout_follows_channels_last_memory_and_bf16():
    torch.manual_seed(2)
    x = torch.randn(4, 16, 5, 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    out = Dropout(0.25).train()(x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    kept = out != 0
    assert torch.allclose(out[kept].float(), x[kept].float() / 0.75, rtol=1e-2)  # bf16 rounding


def test_dropout_is_seeded_by_torch_rng_and_is_identity_in_eval():
    layer = Dropout(0.4)
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = layer.train()(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b)
    assert torch.equal(layer.eval()(x), x)
    assert isinstance(layer, nn.Dropout) and layer.state_dict() == {}


def test_dense_layers_run_fp32_under_cpu_bf16_autocast():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    dense_layers_in_fp32(model)
    assert list(model.state_dict()) == keys
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model[1](model[0](x))
        out = model(x)
    assert features.dtype == torch.bfloat16 and out.dtype == torch.float32
    # the dense layer's result is an fp32 product of the (bf16) features, not a bf16 one
    assert torch.equal(out, F.linear(features.float(), model[2].weight, model[2].bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert reference(x).dtype == torch.bfloat16


FAULTS_PROBE = """
import resource, sys, torch
from cnnbench.engine import keep_freed_memory_for_reuse
applied = keep_freed_memory_for_reuse()
for _ in range(3):
    torch.ones(16 * 2**20)  # 64 MiB, allocated, touched and freed: a training step's activations
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # eight more steps
    torch.ones(16 * 2**20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_freed_activations_are_reused_without_page_faults():
    results = {}
    for setting in ("", "system"):
        env = {**os.environ, "CNNBENCH_MALLOC": setting}
        out = subprocess.run([sys.executable, "-c", FAULTS_PROBE], capture_output=True, text=True, env=env, check=True)
        applied, faults = out.stdout.split()
        results[setting] = (applied == "True", int(faults))
    assert results[""][0] and not results["system"][0]
    # 64 MiB is 16,384 pages of 4 KiB: glibc's default maps them afresh every step; kept memory is reused without faults
    assert results["system"][1] > 8 * 10_000
    assert results[""][1] < 10_000


def test_probe_picks_format_then_fewer_threads_while_faster_and_caches_it(monkeypatch):
    from cnnbench.engine import autotune

    rates = {("fp32", False): 100, ("fp32", True): 120, ("bf16", False): 90, ("bf16", True): 150}
    by_threads = {4: 1.0, 2: 1.3, 1: 1.1}  # this model is fastest on 2 of 4 threads
    calls = []

    def fake(workload, precision, channels_last):
        calls.append((precision, channels_last, torch.get_num_threads()))
        return rates[(precision, channels_last)] * by_threads[torch.get_num_threads()]

    monkeypatch.setattr(autotune, "_images_per_s", fake)
    monkeypatch.setattr(autotune, "_cpu_times", lambda: None)  # this machine's other load must not decide the test
    monkeypatch.setattr(autotune, "DEFAULT_THREADS", 4)
    monkeypatch.setattr(autotune, "bf16_supported", lambda: True)
    before = torch.get_num_threads()
    model = nn.Linear(3, 2)
    choice = autotune.choose_cpu_format(model, (3, 1, 1), 8, key={"model": "thread-test"})
    assert choice[:3] == ("bf16", True, 2)
    # formats on all threads (3 rounds of 4), then each halving against the current count (3 rounds of 2)
    assert [c[2] for c in calls] == [4] * 12 + [4, 2, 2, 4, 4, 2] + [2, 1, 1, 2, 2, 1]
    assert torch.get_num_threads() == before  # the caller applies the choice
    calls.clear()
    assert autotune.choose_cpu_format(model, (3, 1, 1), 8, key={"model": "thread-test"})[:3] == ("bf16", True, 2)
    assert calls == []  # from the cache
    assert autotune.choose_cpu_format(model, (3, 1, 1), 8, key={"model": "thread-test"}, precision="fp32",
                                      channels_last=False, threads=3)[:3] == ("fp32", False, 3)  # all given: no probe


def test_threads_option_is_applied_and_recorded(cli, data_root, tmp_path):
    from tests.helpers import DIGITS28

    bad = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--threads", "0", "--out", tmp_path)
    assert bad.code == 2 and "--threads 0" in bad.err and "Traceback" not in bad.err
    before = torch.get_num_threads()
    try:
        result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--epochs", "1", "--threads",
                     "1", "--out", tmp_path, "--json", "--quiet")  # fmt: skip
        assert result.code == 0, result.err
        config = json.loads((Path(result.json()["run_dir"]) / "config.json").read_text())
        assert config["device"]["threads"] == 1 and config["train"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_dropout_near_zero_or_one_falls_back_to_pytorch():
    x = torch.ones(1000)
    assert torch.equal(Dropout(0.999995).train()(x), torch.zeros(1000))  # rounds to "drop all": no division by zero
    assert (Dropout(1e-6).train()(x) != 0).sum() >= 990  # rounds to "drop none": PyTorch's dropout at p = 1e-6


def test_a_run_without_a_thread_choice_gets_the_default_back():
    from cnnbench.engine import DEFAULT_THREADS
    from cnnbench.runs.resources import Format, apply_threads

    try:
        apply_threads(Format("fp32", False, 1, {}))
        assert torch.get_num_threads() == 1
        apply_threads(Format("bf16", True, None, {}))  # e.g. a GPU run or a frozen backbone after a 1-thread run
        assert torch.get_num_threads() == DEFAULT_THREADS
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


# --- the narrow channels_last BatchNorm ---------------------------------------------------------------------------


def _twin_batchnorms(channels: int, **options) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    torch.manual_seed(1)
    ours = BatchNorm2d(channels, **options)
    if ours.affine:
        nn.init.uniform_(ours.weight, 0.5, 1.5)
        nn.init.uniform_(ours.bias, -0.5, 0.5)
    reference = nn.BatchNorm2d(channels, **options)
    reference.load_state_dict(ours.state_dict())
    return reference, ours


def _step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    y = layer.train()(x)
    y.backward(grad)
    return y, x.grad


@pytest.mark.parametrize("channels", [1, 3, 8, 12])
@pytest.mark.parametrize("affine", [True, False])
def test_narrow_batchnorm_trains_as_pytorchs_does(channels, affine):
    """Output, input gradient, weight and bias gradients, running statistics and their count, over three steps, on
    inputs with a large mean (where a one-pass variance would lose its digits), in fp32."""
    reference, ours = _twin_batchnorms(channels, affine=affine)
    for step in range(3):
        torch.manual_seed(10 + step)
        x = (torch.randn(6, channels, 7, 5) * 0.5 + 40.0).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(6, channels, 7, 5).contiguous(memory_format=torch.channels_last)
        y_ref, dx_ref = _step(reference, x, grad)
        y, dx = _step(ours, x, grad)
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in (y, dx))
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-3, atol=1e-4)
    if affine:
        # sums over 3 x 210 products, each kernel rounding in its own order
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-3, atol=1e-3)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), rtol=1e-5, atol=1e-5)
    assert int(ours.num_batches_tracked) == int(reference.num_batches_tracked) == 3


def test_narrow_batchnorm_in_bf16_rounds_as_pytorchs_does():
    """A bf16 input (bf16 autocast) comes out in bf16, within one bf16 rounding of PyTorch's mixed-precision kernel."""
    reference, ours = _twin_batchnorms(8)
    torch.manual_seed(3)
    x = torch.randn(16, 8, 13, 13).bfloat16().contiguous(memory_format=torch.channels_last)
    grad = torch.randn(16, 8, 13, 13).bfloat16().contiguous(memory_format=torch.channels_last)
    (y_ref, dx_ref), (y, dx) = _step(reference, x, grad), _step(ours, x, grad)
    assert y.dtype == dx.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0.02, atol=0.02)
    torch.testing.assert_close(dx.float(), dx_ref.float(), rtol=0.02, atol=0.02)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=0.02, atol=0.05)


def test_batchnorm_takes_pytorchs_path_where_that_is_the_fast_or_the_only_one():
    """Contiguous (NCHW) inputs, 16 channels or more, evaluation, tracing and one value per channel all run PyTorch's
    own batch norm: the custom step is only where it was measured faster, and an export sees the standard operator."""
    layer = BatchNorm2d(8)

    def runs_custom(module: nn.Module, x: torch.Tensor) -> bool:
        return "_BatchNormTraining" in type(module(x.requires_grad_()).grad_fn).__name__

    cl = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert runs_custom(layer.train(), cl)
    assert not runs_custom(layer.train(), torch.randn(4, 8, 5, 5))
    assert not runs_custom(layer.eval(), cl)
    wide = torch.randn(4, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    assert not runs_custom(BatchNorm2d(16).train(), wide)
    traced = torch.jit.trace(BatchNorm2d(8).train(), cl)
    assert "batch_norm" in str(traced.graph)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.train()(torch.randn(1, 8, 1, 1).contiguous(memory_format=torch.channels_last))


def test_the_zoo_builds_the_fast_batchnorm_with_pytorchs_state_dict():
    from cnnbench.models import build_model
    from cnnbench.models.zoo import InputSpec

    model, _ = build_model("mnist-7498", InputSpec(channels=1, height=28, width=28, num_classes=10))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3 and all(type(m) is BatchNorm2d for m in norms)
    plain = nn.BatchNorm2d(8)
    assert set(norms[0].state_dict()) == set(plain.state_dict())


def test_narrow_batchnorm_output_takes_an_inplace_relu():
    """fit models put ReLU(inplace=True) after their BatchNorm: the output must be a tensor of its own, not a view."""
    reference, ours = _twin_batchnorms(8)
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 8, 6, 6)
    (y_ref, dx_ref), (y, dx) = (_step(nn.Sequential(layer, nn.ReLU(inplace=True)), x, grad)
                                for layer in (reference, ours))  # fmt: skip
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-3, atol=1e-4)


needs_compiler = pytest.mark.skipif(native.kernels() is None, reason="no C++ compiler here: PyTorch's pooling is used")


def _pool_step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    y.backward(grad)
    return y.detach(), x.grad, type(y.grad_fn).__name__


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(4, 8, 26, 26), (3, 16, 11, 11), (2, 32, 3, 3), (2, 5, 9, 7), (2, 1, 4, 5),
                                   (2, 256, 6, 6), (1, 3, 2, 2)])  # fmt: skip
def test_native_max_pool_gives_pytorchs_outputs_and_gradients_bit_for_bit(dtype, shape):
    """The zoo's channel counts (their own compiled loops) and others, odd sides (the last row and column fall out of
    every window and get zero gradient), ties (the first in the window wins), NaNs (they win) and signed zeros."""
    torch.manual_seed(0)
    x = torch.randn(shape).round_().to(dtype)  # rounded: many ties within a window
    x[0, 0, 0, :2] = float("nan")
    x[0, 0, 1, :2] = torch.tensor([-0.0, 0.0])  # a tie of zeros: the first, -0.0, wins
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2).to(dtype)
    y_ref, dx_ref, _ = _pool_step(nn.MaxPool2d(2), x, grad)
    y, dx, path = _pool_step(MaxPool2d(2), x, grad)
    assert path == "_MaxPool2x2Backward"
    assert y.is_contiguous(memory_format=torch.channels_last) and dx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0, equal_nan=True)  # NaN payloads may differ; NaN stays NaN
    numbers = ~y_ref.isnan()
    assert torch.equal(y.signbit()[numbers], y_ref.signbit()[numbers])  # -0.0 stays -0.0
    assert torch.equal(dx, dx_ref)


@needs_compiler
def test_native_max_pool_agrees_under_autocast_on_any_number_of_threads():
    """bf16 from a convolution under autocast, as in training; the kernel splits rows between torch's threads."""
    x = torch.randn(8, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(8, 16, 6, 6, dtype=torch.bfloat16)
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Conv2d(16, 16, 1), pool) for pool in (nn.MaxPool2d(2), MaxPool2d(2))]
    layers[1][0].load_state_dict(layers[0][0].state_dict())
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                (y_ref, dx_ref, _), (y, dx, path) = (_pool_step(layer, x, grad) for layer in layers)
            assert path == "_MaxPool2x2Backward" and y.dtype == torch.bfloat16
            assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)
    finally:
        torch.set_num_threads(before)


def test_max_pool_takes_pytorchs_path_where_the_kernel_does_not_apply(monkeypatch):
    """NCHW inputs, other windows, strides, padding, ceil mode, indices, fp16, tracing and a machine without the
    kernel all run PyTorch's pooling, with its results."""
    cl = torch.randn(2, 8, 7, 7).contiguous(memory_format=torch.channels_last)
    others = [(MaxPool2d(2), torch.randn(2, 8, 7, 7)), (MaxPool2d(3), cl), (MaxPool2d(2, stride=1), cl),
              (MaxPool2d(2, padding=1), cl), (MaxPool2d(2, ceil_mode=True), cl),
              (MaxPool2d(2), cl.half())]  # fmt: skip
    for layer, x in others:
        y, dx, path = _pool_step(layer, x, torch.ones_like(F.max_pool2d(x, layer.kernel_size, layer.stride,
                                                                      layer.padding, ceil_mode=layer.ceil_mode)))
        assert path == "MaxPool2DWithIndicesBackward0", layer
        assert torch.equal(y, nn.MaxPool2d.forward(layer, x))
    assert isinstance(MaxPool2d(2, return_indices=True)(cl), tuple)
    traced = torch.jit.trace(MaxPool2d(2), cl)
    assert "max_pool2d" in str(traced.graph)
    monkeypatch.setattr(native, "kernels", lambda: None)
    assert _pool_step(MaxPool2d(2), cl, torch.ones(2, 8, 3, 3))[2] == "MaxPool2DWithIndicesBackward0"


def test_the_zoo_pools_with_the_fast_max_pool():
    from cnnbench.models import build_model
    from cnnbench.models.zoo import InputSpec

    for name in ("mnist-7498", "cifar-simple", "cifar-basic"):
        model, _ = build_model(name, InputSpec(channels=3, height=32, width=32, num_classes=10))
        pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
        assert pools and all(type(m) is MaxPool2d for m in pools), name


_LOAD_KERNELS = "from cnnbench.models import native; print(native.kernels() is not None)"


@needs_compiler
def test_the_kernel_is_compiled_once_per_machine_and_then_loaded(tmp_path):
    """A second process loads the cached library: the compiler (a wrapper that counts its calls) runs once; a damaged
    library is built again."""
    real = next(shutil.which(c) for c in ("c++", "g++", "clang++") if shutil.which(c))
    calls = tmp_path / "calls"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\necho called >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "CNNBENCH_CACHE": str(tmp_path / "cache"), "CXX": str(wrapper)}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _LOAD_KERNELS], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.stdout.strip() == "True", done.stderr
    assert calls.read_text().splitlines() == ["called"]
    (library,) = (tmp_path / "cache" / "native").iterdir()  # no scratch file left beside it
    library.write_bytes(library.read_bytes()[:100])  # damaged: the next process builds it again
    done = subprocess.run([sys.executable, "-c", _LOAD_KERNELS], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "True", done.stderr
    assert calls.read_text().splitlines() == ["called", "called"]


def test_without_a_working_compiler_or_when_switched_off_pytorchs_pooling_runs(tmp_path):
    """A compiler that fails leaves a warning, no library and a model that still trains; CNNBENCH_NATIVE=0 does not
    try at all."""
    train = ("import logging, torch; logging.basicConfig(); from cnnbench.models import native; "
             "from cnnbench.models.layers import MaxPool2d; "
             "x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(); "
             "MaxPool2d(2)(x).sum().backward(); print(native.kernels() is None, x.grad.sum().item())")  # fmt: skip
    for extra in ({"CXX": "false"}, {"CNNBENCH_NATIVE": "0"}):
        env = {**os.environ, "CNNBENCH_CACHE": str(tmp_path), **extra}
        done = subprocess.run([sys.executable, "-c", train], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "72.0"]  # each of the 2x4x3x3 windows passes its gradient of 1
        assert ("could not be built" in done.stderr) == ("CXX" in extra)
        assert not (tmp_path / "native").exists() or not list((tmp_path / "native").iterdir())
