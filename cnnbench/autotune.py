"""Pick the fastest precision, memory format and thread count for a model on this CPU, by measuring, once.

Which of fp32/bf16 and contiguous/channels_last trains fastest differs by model on the same CPU (channels_last helps
small MNIST nets and can slow a CIFAR net in fp32), so a fixed choice leaves speed on the table. The probe times a few
training steps of a copy of the model on a synthetic batch of the real shape for each candidate, and remembers the
winner in `~/.cache/cnnbench/autotune.json` (`$CNNBENCH_CACHE` moves it; keyed by model, input, batch size, CPU,
thread counts and torch version), so each combination is probed once per machine. The global RNG is restored
afterwards, so probing does not change a seeded run. `--precision`, `--channels-last/--no-channels-last` and
`--threads` fix their part of the choice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnbench.engine import DEFAULT_THREADS, dense_layers_in_fp32, keep_freed_memory_for_reuse
from cnnbench.storage import write_json_atomic

PROBE_SECONDS = 0.25  # per candidate, after one warm-up step
PROBE_VERSION = 3  # part of the cache key: raise it when the engine's speed changes, so old choices are measured again


def cache_path() -> Path:
    return Path(os.environ.get("CNNBENCH_CACHE", Path.home() / ".cache" / "cnnbench")) / "autotune.json"


def bf16_supported() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def candidates(precision: str, channels_last: bool | None) -> list[tuple[str, bool]]:
    precisions = [precision] if precision != "auto" else (["fp32", "bf16"] if bf16_supported() else ["fp32"])
    formats = [channels_last] if channels_last is not None else [False, True]
    return [(p, c) for p in precisions for c in formats]


def thread_counts(threads: int | None) -> list[int]:
    """All cores, then half as many, ... down to one: small models can lose more to splitting work than they gain."""
    if threads is not None:
        return [threads]
    counts, n = [], DEFAULT_THREADS  # PyTorch's default in this process, read before any run changed it
    while n >= 1:
        counts.append(n)
        n //= 2
    return counts


def choose_cpu_format(model: nn.Module, input_shape: tuple[int, int, int], batch_size: int, *, key: dict[str, Any],
                      precision: str = "auto", channels_last: bool | None = None,
                      threads: int | None = None) -> tuple[str, bool, int, dict]:  # fmt: skip
    """(precision, channels_last, threads, timings in images/s) for training `model` on the CPU.

    Formats are compared with all threads; then the winner runs with half as many threads, and so on while that is
    faster. The thread count is restored afterwards: the caller applies the choice."""
    options, counts = candidates(precision, channels_last), thread_counts(threads)
    if len(options) == 1 and len(counts) == 1:
        return options[0][0], options[0][1], counts[0], {}
    full_key = {**key, "probe": PROBE_VERSION, "input": list(input_shape), "batch_size": batch_size,
                "threads": counts, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                "candidates": [label(p, c) for p, c in options]}  # fmt: skip
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:16]
    cache = _read_cache()
    if digest in cache:
        hit = cache[digest]
        return hit["precision"], hit["channels_last"], hit["threads"], hit["images_per_s"]
    rng, before = torch.get_rng_state(), torch.get_num_threads()
    try:
        torch.set_num_threads(counts[0])
        timings = {label(p, c): _images_per_s(model, input_shape, batch_size, p, c) for p, c in options}
        chosen_precision, chosen_layout = max(options, key=lambda option: timings[label(*option)])
        best, chosen_threads = label(chosen_precision, chosen_layout), counts[0]
        for n in counts[1:]:
            torch.set_num_threads(n)
            name = f"{best} {n} threads"
            timings[name] = _images_per_s(model, input_shape, batch_size, chosen_precision, chosen_layout)
            if timings[name] <= timings[best]:
                break
            best, chosen_threads = name, n
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(before)
    cache[digest] = {"precision": chosen_precision, "channels_last": chosen_layout, "threads": chosen_threads,
                     "images_per_s": timings, "key": full_key}  # fmt: skip
    try:
        write_json_atomic(cache_path(), cache)
    except OSError:
        pass  # a read-only home only costs a probe next time
    return chosen_precision, chosen_layout, chosen_threads, timings


def label(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'cl' if channels_last else 'nchw'}"


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _images_per_s(model: nn.Module, shape: tuple[int, int, int], batch_size: int, precision: str,
                  channels_last: bool) -> float:  # fmt: skip
    keep_freed_memory_for_reuse()  # as the Trainer will run, or fp32's larger tensors pay more in page faults
    probe = copy.deepcopy(model).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    probe.to(memory_format=memory_format)
    if precision == "bf16":
        dense_layers_in_fp32(probe)  # as the Trainer runs bf16 on a CPU
    x = torch.randn(batch_size, *shape).contiguous(memory_format=memory_format)
    optimizer = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad] or [torch.zeros(1)], lr=1e-6)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = probe(x)
        loss = out.float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < PROBE_SECONDS or steps < 2:
        step()
        steps += 1
    return round(steps * batch_size / (time.perf_counter() - start), 1)

