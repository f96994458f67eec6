"""Pick the fastest precision, memory format and thread count for a model on this CPU, by measuring, once per machine.

Which of fp32/bf16 and contiguous/channels_last trains fastest differs by model on the same CPU (channels_last helps
small MNIST nets and can slow a CIFAR net in fp32), and so does the thread count (small models on many cores lose more
to splitting the work than they gain), so a fixed choice leaves speed on the table. The probe times training steps of
a copy of the model on a synthetic batch of the real shape and remembers the winner in
`~/.cache/cnnbench/autotune.json` (`$CNNBENCH_CACHE` moves the folder). `--precision`,
`--channels-last/--no-channels-last` and `--threads` fix their part of the choice.

A remembered choice serves every later run, so a wrong one costs far more than a probe: one taken while other work
ran cached 1 thread for mnist-7498, and every later run on the quiet machine trained 2.5x slower than on 2 threads.
- Candidates are timed in short windows, round-robin (each round starting one candidate later), ROUNDS times: a
  disturbance then lands on one window of several candidates instead of on all the windows of one. A candidate whose
  windows disagree by more than NOISE_TOLERANCE is timed again, for up to MAX_ROUNDS rounds.
- Fewer threads replace more only when they win every round of an interleaved comparison, by THREAD_MARGIN: one
  disturbed window never lowers the thread count.
- A probe whose timings stayed noisy, or during which other processes kept the cores busy (/proc/stat), decides for
  this process only and is not cached: the log says "not cached: the machine was busy".
- The cache key names what decides the answer: the CPU model, its instruction sets (AVX2, AVX-512, bf16, AMX), the
  usable cores, torch's version and oneDNN, besides the model, input, batch size and the options left to the probe.
  An entry made on another CPU (a home directory shared by a cluster's nodes) is never used.
- A run that trains far slower than its choice promised marks the entry stale (PromiseWatch, check_promise), and the
  next run probes again; `cnnbench models --probe MODEL` shows an entry, and `--refresh` measures it again.
The global RNG and thread count are restored afterwards, so probing does not change a seeded run.

This module measures and decides; the file it remembers in is autotune_cache.py, and holding runs to the promise is
autotune_promise.py. Their public names are re-exported here, so that `cnnbench.engine.autotune` stays the one module
to import for the probe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnbench.core.environment import cpu_info as _cpu_info  # a module name here: tests stand in other CPUs
from cnnbench.engine.autotune_cache import PROBE_VERSION, cache_path, cached_entry, read_cache, update_cache
from cnnbench.engine.autotune_promise import (  # noqa: F401 - re-exported: callers import the probe's names from here
    PROMISE_EPOCHS,
    PROMISE_FLOOR,
    PROMISE_FLOOR_AUGMENTED,
    PromiseWatch,
    check_promise,
)
from cnnbench.engine.device import DEFAULT_THREADS, dense_layers_in_fp32, keep_freed_memory_for_reuse
from cnnbench.models import build_model, native

logger = logging.getLogger(__name__)

# About a second per configuration on a quiet 2-core CPU (0.8-2.3 s, mnist-722 to cifar-simple): 4 candidates x 3
# rounds, then 2 x 3 per halving of threads.
PROBE_SECONDS = 0.04  # one timed window (at least one step, after one untimed warm-up step per candidate and threads)
ROUNDS = 3  # windows per candidate: the median is its figure, and the spread of the three says whether to trust it
MAX_ROUNDS = 5  # a noisy comparison gets up to two more rounds before its answer is used for this process only
# A candidate's last ROUNDS windows may differ by this factor (max/min). On the project's quiet 2-core VM, 11 of 12
# probes kept every candidate within 1.05-1.25x (the twelfth, mnist-722 with 2 ms steps, spread 1.47 after five rounds
# and was not cached); a neighbour taking a core makes some windows of a many-threaded candidate 2-80x slower.
NOISE_TOLERANCE = 1.3
THREAD_MARGIN = 1.05  # fewer threads must be this much faster (median) as well as faster in every round
# Other processes' CPU use on the usable cores, averaged over the probe, that makes it untrustworthy: a quarter of a
# core already stalls a many-threaded step at every barrier while it is scheduled. Measured: 0.00-0.03 cores on the
# quiet VM, 0.6-1.3 while other jobs ran (2-thread steps then up to 80x slower than 1-thread ones).
BUSY_CORES = 0.25
# Instruction sets that change which precision and kernels win (x86: AVX2, AVX-512, bf16 dot products, AMX; Arm:
# NEON, SVE, bf16).
DECISIVE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve", "sve2", "bf16")

Variant = tuple[str, bool, int]  # precision, channels_last, threads


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


def label(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'cl' if channels_last else 'nchw'}"


# --- what the answer depends on ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The parts of this machine that decide the probe's answer; part of every cache key."""
    name, flags = _cpu_info()
    return {"cpu": name, "flags": [f for f in DECISIVE_FLAGS if f in flags], "cores": usable_cores(),
            "torch": torch.__version__, "onednn": torch.backends.mkldnn.is_available(),
            "native_kernels": native.kernels() is not None}  # fmt: skip


def usable_cores() -> int:
    """Cores this process may run on: a container's or taskset's CPU set, not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def probe_key(input_shape: tuple[int, int, int], batch_size: int, *, key: dict[str, Any], precision: str = "auto",
              channels_last: bool | None = None, threads: int | None = None) -> tuple[dict[str, Any], str]:  # fmt: skip
    """(the full cache key, its digest) for a configuration: what the probe compares, and on what machine."""
    options, counts = candidates(precision, channels_last), thread_counts(threads)
    full_key = {**key, "probe": PROBE_VERSION, "input": list(input_shape), "batch_size": batch_size,
                "threads": counts, "candidates": [label(p, c) for p, c in options], "machine": machine()}  # fmt: skip
    return full_key, hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:16]


# --- the choice -------------------------------------------------------------------------------------------------------

class FormatChoice(NamedTuple):
    """What choose_cpu_format decided. A tuple, so `precision, channels_last, threads, images_per_s, choice = ...`."""

    precision: str
    channels_last: bool
    threads: int
    images_per_s: dict  # the timings: images/s per candidate, {} when nothing was measured
    # How it was decided: digest (the cache entry), source ("cache" or "probe"), cached, not_cached_because (None, or
    # why a probe's answer is for this process only), promised_images_per_s (the probe's figure for the choice: what
    # PromiseWatch holds a run to), measured (when), the choice and its timings. None when the options left nothing to
    # choose.
    choice: dict[str, Any] | None = None


def choose_cpu_format(model: nn.Module, input_shape: tuple[int, int, int], batch_size: int, *, key: dict[str, Any],
                      precision: str = "auto", channels_last: bool | None = None, threads: int | None = None,
                      refresh: bool = False) -> FormatChoice:  # fmt: skip
    """Precision, channels_last, threads and timings in images/s for training `model` on the CPU, and how they were
    decided (FormatChoice.choice).

    From the cache when this machine has a fresh entry for the configuration (and not `refresh`), else measured:
    formats on all threads, then the winner on half as many, and so on while fewer win every round. A trustworthy
    measurement is cached. The thread count is restored afterwards: the caller applies the choice."""
    options, counts = candidates(precision, channels_last), thread_counts(threads)
    if len(options) == 1 and len(counts) == 1:
        return FormatChoice(options[0][0], options[0][1], counts[0], {})
    full_key, digest = probe_key(input_shape, batch_size, key=key, precision=precision, channels_last=channels_last,
                                 threads=threads)  # fmt: skip
    hit = read_cache().get(digest)
    if hit is not None and not refresh and not hit.get("stale"):
        choice = {"digest": digest, "source": "cache", "cached": True, "not_cached_because": None, **_summary(hit)}
        return FormatChoice(hit["precision"], hit["channels_last"], hit["threads"], hit["images_per_s"], choice)
    outcome = _probe(model, input_shape, batch_size, options, counts)
    entry = {"precision": outcome.precision, "channels_last": outcome.channels_last, "threads": outcome.threads,
             "images_per_s": outcome.images_per_s, "promised_images_per_s": outcome.promised,
             "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": outcome.rounds, "spread": outcome.spread,
             "other_cores": outcome.other_cores, "key": full_key}  # fmt: skip
    cached = outcome.not_cached_because is None and update_cache(lambda cache: cache.__setitem__(digest, entry))
    reason = outcome.not_cached_because or (None if cached else f"{cache_path()} could not be written")
    choice = {"digest": digest, "source": "probe", "cached": cached, "not_cached_because": reason, **_summary(entry)}
    return FormatChoice(outcome.precision, outcome.channels_last, outcome.threads, outcome.images_per_s, choice)


def describe_choice(choice: dict[str, Any]) -> str:
    """The log line for a choice (FormatChoice.choice): what was chosen, the figures, and whether it is remembered."""
    layout = "channels_last" if choice["channels_last"] else "contiguous"
    figures = ", ".join(f"{name} {rate:,.0f} img/s" for name, rate in choice["images_per_s"].items())
    if choice["source"] == "cache":
        where = f"cached {choice['measured']}"
    elif choice["cached"]:
        where = "cached"
    else:
        where = f"not cached: {choice['not_cached_because']}"
    return (f"fastest on this CPU: {choice['precision']}, {layout}, {choice['threads']} threads (probed {figures}; "
            f"{where})")  # fmt: skip


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    fields = ("precision", "channels_last", "threads", "images_per_s", "promised_images_per_s", "measured", "rounds",
              "spread", "other_cores", "stale")  # fmt: skip
    return {name: entry.get(name) for name in fields}


# --- measuring --------------------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    precision: str
    channels_last: bool
    threads: int
    images_per_s: dict[str, float]  # median per candidate on all threads, and the winner's per fewer threads tried
    promised: float  # the chosen variant's median in the last comparison it took part in
    rounds: int  # the most rounds a comparison needed
    spread: float  # the largest max/min over a variant's last ROUNDS windows
    other_cores: float | None  # cores other processes kept busy during the probe, None where unknown
    not_cached_because: str | None


def _probe(model: nn.Module, input_shape: tuple[int, int, int], batch_size: int, options: list[tuple[str, bool]],
           counts: list[int]) -> _Outcome:  # fmt: skip
    rng, before = torch.get_rng_state(), torch.get_num_threads()
    workload = _Workload(model, input_shape, batch_size)
    start = _cpu_times()

    def busy() -> bool:
        other = _other_cores(start, _cpu_times())
        return other is not None and other > BUSY_CORES

    timings: dict[str, float] = {}
    spreads: list[float] = []
    rounds = 0
    try:
        (precision, layout), promised = options[0], 0.0
        if len(options) > 1:
            # Formats on a busy machine: one round, since only this process will use the answer; the thread count,
            # which a busy machine misleads most, still gets every round.
            windows = _measure(workload, [(p, c, counts[0]) for p, c in options], busy, rounds_if_busy=1)
            rounds = max(rounds, len(windows[0]))
            figures = [_median(w) for w in windows]
            spreads += [_spread(w) for w in windows]
            timings.update({label(p, c): figure for (p, c), figure in zip(options, figures)})
            best = max(range(len(options)), key=figures.__getitem__)
            (precision, layout), promised = options[best], figures[best]
        chosen = counts[0]
        for n in counts[1:]:
            more, fewer = _measure(workload, [(precision, layout, chosen), (precision, layout, n)], busy)
            rounds = max(rounds, len(more))
            spreads += [_spread(more), _spread(fewer)]
            timings.setdefault(label(precision, layout), _median(more))  # one format: its all-threads figure
            timings[f"{label(precision, layout)} {n} threads"] = _median(fewer)
            # Pairs of windows taken back to back: fewer threads must win each pair, so one disturbed window (of the
            # many-threaded variant, which a neighbour hurts most) cannot lower the count.
            wins = all(f > m for m, f in zip(more[-ROUNDS:], fewer[-ROUNDS:]))
            if not (wins and _median(fewer) > THREAD_MARGIN * _median(more)):
                promised = _median(more)
                break
            chosen, promised = n, _median(fewer)
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(before)
    other = _other_cores(start, _cpu_times())
    spread = max(spreads, default=1.0)
    reason = None
    if other is not None and other > BUSY_CORES:
        reason = f"the machine was busy (other processes used {other:.2f} of {usable_cores()} cores)"
    elif spread > NOISE_TOLERANCE:
        reason = f"the machine was busy (repeated timings differed by up to {spread:.2f}x after {rounds} rounds)"
    return _Outcome(precision, layout, chosen, timings, promised, rounds, round(spread, 3),
                    None if other is None else round(other, 3), reason)  # fmt: skip


def _measure(workload: _Workload, variants: list[Variant], busy: Callable[[], bool], *,
             rounds_if_busy: int = ROUNDS) -> list[list[float]]:  # fmt: skip
    """Windows of images/s per variant, round-robin: ROUNDS rounds, each starting one variant later than the last, and
    more (up to MAX_ROUNDS) while some variant's last ROUNDS windows differ by more than NOISE_TOLERANCE.

    While other processes are busy the answer serves this process only, so no round is added, and after
    `rounds_if_busy` rounds none either: a neighbour slows many-threaded steps most (with one of two cores taken, a
    2-thread step of fit:7500 at batch 256 took 6 s instead of 0.1 s), and more of them would only delay the run."""
    windows: list[list[float]] = [[] for _ in variants]
    for r in range(MAX_ROUNDS):
        for k in range(len(variants)):
            i = (r + k) % len(variants)
            precision, channels_last, threads = variants[i]
            torch.set_num_threads(threads)
            windows[i].append(_images_per_s(workload, precision, channels_last))
        done = r + 1
        if done >= ROUNDS and max(_spread(w) for w in windows) <= NOISE_TOLERANCE:
            break
        if done >= min(rounds_if_busy, ROUNDS) and busy():
            break
    return windows


def _median(windows: list[float]) -> float:
    return round(statistics.median(windows[-ROUNDS:]), 1)


def _spread(windows: list[float]) -> float:
    recent = windows[-ROUNDS:]
    return max(recent) / max(min(recent), 1e-9)


class _Workload:
    """A model's training step on a synthetic batch of the real shape: one copy of the model per candidate, made on
    first use, and one untimed warm-up step per candidate and thread count (oneDNN builds its kernels for each shape,
    layout and thread count on first use), so the timed windows hold nothing but steps."""

    def __init__(self, model: nn.Module, shape: tuple[int, int, int], batch_size: int) -> None:
        self.model, self.shape, self.batch_size = model, shape, batch_size
        self.steps: dict[tuple[str, bool], tuple[Callable[[], None], torch.optim.Optimizer]] = {}
        self.warm: set[Variant] = set()

    def step(self, precision: str, channels_last: bool) -> tuple[Callable[[], None], torch.optim.Optimizer]:
        if (precision, channels_last) not in self.steps:
            self.steps[precision, channels_last] = self._prepare(precision, channels_last)
        step, optimizer = self.steps[precision, channels_last]
        if (precision, channels_last, torch.get_num_threads()) not in self.warm:
            step()
            self.warm.add((precision, channels_last, torch.get_num_threads()))
        return step, optimizer

    def _prepare(self, precision: str, channels_last: bool) -> tuple[Callable[[], None], torch.optim.Optimizer]:
        keep_freed_memory_for_reuse()  # as the Trainer will run, or fp32's larger tensors pay more in page faults
        probe = copy.deepcopy(self.model).train()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        probe.to(memory_format=memory_format)
        if precision == "bf16":
            dense_layers_in_fp32(probe)  # as the Trainer runs bf16 on a CPU
        x = torch.randn(self.batch_size, *self.shape).contiguous(memory_format=memory_format)
        optimizer = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad] or [torch.zeros(1)], lr=1e-6)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = probe(x)
            loss = out.float().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step, optimizer


def _images_per_s(workload: _Workload, precision: str, channels_last: bool, *, seconds: float | None = None) -> float:
    """One timed window (PROBE_SECONDS unless told) of the candidate's training steps at the current thread count."""
    step, optimizer = workload.step(precision, channels_last)
    window = PROBE_SECONDS if seconds is None else seconds  # read at call time: tests shorten PROBE_SECONDS
    steps, start = 0, time.perf_counter()
    while steps < 1 or time.perf_counter() - start < window:
        step()
        steps += 1
    seconds = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)  # every candidate's gradients held at once would double the probe's memory
    return round(steps * workload.batch_size / seconds, 1)


def training_speed(model: nn.Module, shape: tuple[int, int, int], batch_size: int, *, seconds: float = 0.5) -> float:
    """Images per second of fp32 training steps on a synthetic batch, timed for `seconds` after one warm-up step: the
    quick figure a plan's estimate uses where the probe has measured nothing (not the probe's choice of format)."""
    return _images_per_s(_Workload(model, shape, batch_size), "fp32", False, seconds=seconds)


def _cpu_times() -> tuple[float, float, float] | None:
    """(seconds the usable cores have been busy, per /proc/stat; this process's CPU seconds; the wall clock), or None
    where /proc/stat is missing (macOS, Windows): then only the timings' spread can say the machine was busy."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    ticks = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or (usable is not None and int(name[3:]) not in usable):
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(v) for v in values] + [0] * 8)[:8]
        ticks += user + nice + system + irq + softirq + steal  # steal: a hypervisor giving our core to another guest
    return ticks / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter()


def _other_cores(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
    """Cores that processes other than this one kept busy between two _cpu_times, on average; None when unknown or
    when too little time passed for /proc/stat's 10 ms ticks to say."""
    if start is None or end is None or end[2] - start[2] < 0.2:
        return None
    busy, own, wall = (b - a for a, b in zip(start, end))
    return max(0.0, (busy - own) / wall)


# --- `cnnbench models --probe` ----------------------------------------------------------------------------------------


def probe_report(name: str, input_spec: Any, batch_size: int, *, refresh: bool = False) -> dict[str, Any]:  # fmt: skip
    """The cached choice for training model `name` at `input_spec` and `batch_size` on this CPU, with every option
    left to the probe (what `train` without --precision/--channels-last/--threads would use); `refresh` measures it
    again first. Keyed as resources.choose_format keys it: {"model": the resolved ModelSpec}."""
    model, model_spec = build_model(name, input_spec)
    shape = (input_spec.channels, input_spec.height, input_spec.width)
    key = {"model": model_spec.to_dict()}
    full_key, digest = probe_key(shape, batch_size, key=key)
    report: dict[str, Any] = {"model": name, "input": input_spec.describe(), "batch_size": batch_size,
                              "cache": str(cache_path()), "digest": digest, "machine": full_key["machine"]}  # fmt: skip
    if refresh:
        logger.info(f"measuring {name} at {input_spec.describe()}, batch {batch_size} (about a second)")
        report["measured_now"] = choose_cpu_format(model, shape, batch_size, key=key, refresh=True).choice
    entry = cached_entry(digest)
    report["entry"] = None if entry is None else _summary(entry)
    return report
