"""The CPU format probe keeps only choices it can trust: interleaved, repeated timings; no thread cut on one disturbed
window; nothing cached from a busy machine; entries keyed by the machine; runs that break the promise flag their entry.

The timings are scripted (a fake `_images_per_s`), so these tests take no measurements and no time."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnbench.engine import autotune

MODEL = nn.Linear(3, 2)
SHAPE = (3, 1, 1)
ORDER = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # candidates(): the probe's order


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """A probe on a fake 4-thread CPU with bf16, its own cache, no /proc/stat reading, and timings from `rates`
    (default `steady`): rates(precision, channels_last, threads, n) -> img/s, n counting that variant's windows."""
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "DEFAULT_THREADS", 4)
    monkeypatch.setattr(autotune, "bf16_supported", lambda: True)
    monkeypatch.setattr(autotune, "_cpu_times", lambda: None)
    monkeypatch.setattr(autotune, "_cpu_info", lambda: ("Test CPU 9000", frozenset({"avx2", "avx512f", "sse4_2"})))

    class Probe:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bool, int]] = []
            self.rates = steady

        def choose(self, key: str = "m", **options):
            return autotune.choose_cpu_format(MODEL, SHAPE, 8, key={"model": key}, **options)

    state = Probe()

    def fake(workload, precision, channels_last):
        variant = (precision, channels_last, torch.get_num_threads())
        n = state.calls.count(variant)
        state.calls.append(variant)
        return float(state.rates(precision, channels_last, torch.get_num_threads(), n))

    monkeypatch.setattr(autotune, "_images_per_s", fake)
    return state


def steady(precision, channels_last, threads, n):
    """bf16/cl is fastest; 2 threads beat 4 by 1.3x, 1 thread loses to 2."""
    base = {("fp32", False): 100, ("fp32", True): 120, ("bf16", False): 90, ("bf16", True): 150}
    return base[precision, channels_last] * {4: 1.0, 2: 1.3, 1: 1.1}[threads]


def test_candidates_are_timed_round_robin_each_round_starting_one_later(probe):
    chosen = probe.choose()
    assert chosen[:3] == ("bf16", True, 2)
    formats = [ORDER.index(call[:2]) for call in probe.calls[:12]]
    assert formats == [0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 1]  # never one candidate's windows back to back
    threads = [call[2] for call in probe.calls[12:]]
    assert threads == [4, 2, 2, 4, 4, 2] + [2, 1, 1, 2, 2, 1]  # halving, interleaved too, until 1 thread loses
    choice = chosen.choice
    assert choice["source"] == "probe" and choice["cached"] and choice["rounds"] == autotune.ROUNDS
    assert choice["promised_images_per_s"] == 150 * 1.3


def test_the_choice_and_how_it_was_made_come_back_to_the_caller(probe):
    nothing_to_choose = probe.choose(precision="fp32", channels_last=False, threads=1)
    assert nothing_to_choose == ("fp32", False, 1, {}, None) and probe.calls == []
    first, other = probe.choose(key="a"), probe.choose(key="b")  # each call's answer is its own, not the latest one
    assert first.choice["source"] == other.choice["source"] == "probe"
    assert first.choice["digest"] != other.choice["digest"] and first.images_per_s == first.choice["images_per_s"]


def test_the_probe_restores_the_rng_and_thread_count(probe):
    before, rng = torch.get_num_threads(), torch.get_rng_state()
    probe.choose()
    assert torch.get_num_threads() == before and torch.equal(torch.get_rng_state(), rng)


def test_a_noisy_candidate_is_timed_again_and_cached_once_its_windows_agree(probe):
    def one_disturbed_window(precision, channels_last, threads, n):
        return steady(precision, channels_last, threads, n) * (0.4 if (precision, channels_last, n) == ("fp32", True, 0)
                                                               else 1.0)  # fmt: skip

    probe.rates = one_disturbed_window
    chosen = probe.choose()
    assert chosen[:3] == ("bf16", True, 2)
    assert len([c for c in probe.calls if c == ("fp32", True, 4)]) == autotune.ROUNDS + 1  # one more round
    choice = chosen.choice
    assert choice["cached"] and choice["rounds"] == autotune.ROUNDS + 1
    assert autotune.cached_entry(choice["digest"])["rounds"] == autotune.ROUNDS + 1


def test_a_probe_that_stays_noisy_is_used_for_this_process_but_not_cached(probe):
    def flickering(precision, channels_last, threads, n):
        return steady(precision, channels_last, threads, n) * (0.5 if (precision, channels_last) == ("bf16", False)
                                                               and n % 2 else 1.0)  # fmt: skip

    probe.rates = flickering
    chosen = probe.choose()
    assert chosen[:3] == ("bf16", True, 2)  # still the best answer for this run
    choice = chosen.choice
    assert choice["rounds"] == autotune.MAX_ROUNDS and choice["spread"] == 2.0
    assert not choice["cached"] and "the machine was busy" in choice["not_cached_because"]
    assert autotune.cached_entry(choice["digest"]) is None
    assert "not cached: the machine was busy" in autotune.describe_choice(choice)
    probe.calls.clear()
    probe.choose()
    assert probe.calls  # measured again, not read from a cache


def test_one_disturbed_window_never_reduces_the_thread_count(probe):
    def four_threads_faster_but_one_window_disturbed(precision, channels_last, threads, n):
        speed = {4: 1.0, 2: 0.8, 1: 0.5}[threads]
        # bf16/cl's fourth 4-thread window (the thread comparison's first) lost two thirds to a neighbour
        disturbed = (precision, channels_last, threads, n) == ("bf16", True, 4, 3)
        return steady(precision, channels_last, 4, n) * speed * (0.3 if disturbed else 1.0)

    probe.rates = four_threads_faster_but_one_window_disturbed
    chosen = probe.choose()
    assert chosen[:3] == ("bf16", True, 4)
    assert chosen.choice["cached"]  # the repeated rounds agreed once the disturbance had passed


@pytest.mark.parametrize("fewer", [[130, 90, 130], [101, 101, 101]])
def test_fewer_threads_must_win_every_round_and_by_a_margin(probe, fewer):
    def rates(precision, channels_last, threads, n):
        if (precision, channels_last) != ("bf16", True):
            return 50
        if threads == 2:
            return fewer[n % 3]
        return 100

    probe.rates = rates
    assert probe.choose()[2] == 4


def test_a_busy_machine_is_measured_but_not_cached(probe, monkeypatch):
    ticks = iter([(0.0, 0.0, 0.0)] + [(2.0, 1.0, 1.0)] * 100)  # others: (2 busy - 1 ours) / 1 s = a whole core
    monkeypatch.setattr(autotune, "_cpu_times", lambda: next(ticks))
    chosen = probe.choose()
    assert chosen[:3] == ("bf16", True, 2)
    # formats one round only (the answer will not be kept), the thread count still every round
    assert [call[2] for call in probe.calls] == [4] * 4 + [4, 2, 2, 4, 4, 2] + [2, 1, 1, 2, 2, 1]
    choice = chosen.choice
    assert not choice["cached"] and choice["other_cores"] == 1.0
    assert "the machine was busy (other processes used 1.00 of" in choice["not_cached_because"]
    assert autotune.cached_entry(choice["digest"]) is None


def test_the_cache_key_names_the_cpu_its_instruction_sets_cores_torch_and_onednn(probe, monkeypatch):
    full_key, digest = autotune.probe_key(SHAPE, 8, key={"model": "m"})
    machine = full_key["machine"]
    assert machine["cpu"] == "Test CPU 9000"
    assert machine["flags"] == ["avx2", "avx512f"]  # only the sets that decide the answer
    assert machine["cores"] == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    assert machine["torch"] == torch.__version__ and machine["onednn"] == torch.backends.mkldnn.is_available()
    assert full_key["probe"] == autotune.PROBE_VERSION
    monkeypatch.setattr(autotune, "_cpu_info", lambda: ("Test CPU 9000", frozenset({"avx2"})))  # no AVX-512 here
    assert autotune.probe_key(SHAPE, 8, key={"model": "m"})[1] != digest


def test_the_cpu_description_is_read_from_proc_cpuinfo():
    name, flags = autotune._cpu_info()
    if Path("/proc/cpuinfo").is_file() and "model name" in Path("/proc/cpuinfo").read_text():
        assert name and name in Path("/proc/cpuinfo").read_text()
    assert isinstance(flags, frozenset)


def test_an_entry_made_on_another_cpu_is_not_used(probe, monkeypatch):
    xeon = ("Intel Xeon Platinum 8480+", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}))
    monkeypatch.setattr(autotune, "_cpu_info", lambda: xeon)
    made_there = probe.choose().choice["digest"]
    monkeypatch.setattr(autotune, "_cpu_info", lambda: ("AMD EPYC", frozenset({"avx2"})))
    probe.calls.clear()
    here = probe.choose().choice
    assert probe.calls and here["source"] == "probe"  # measured here, not taken from the Xeon's
    assert here["digest"] != made_there
    assert set(json.loads(autotune.cache_path().read_text())) == {made_there, here["digest"]}


def test_entries_of_an_older_probe_are_dropped(probe):
    autotune.cache_path().parent.mkdir(parents=True)
    old = {"precision": "fp32", "channels_last": False, "threads": 1, "images_per_s": {"fp32/nchw": 409.0},
           "key": {"model": "m", "probe": 3, "cpu": "x86_64"}}  # fmt: skip
    autotune.cache_path().write_text(json.dumps({"0123456789abcdef": old}))
    choice = probe.choose().choice
    assert set(json.loads(autotune.cache_path().read_text())) == {choice["digest"]}


def test_a_run_far_slower_than_promised_marks_the_entry_and_the_next_call_probes_again(probe):
    choice = probe.choose().choice
    digest, promised = choice["digest"], choice["promised_images_per_s"]
    probe.calls.clear()
    again = probe.choose()
    assert again[:3] == ("bf16", True, 2) and probe.calls == []  # from the cache
    assert again.choice["source"] == "cache"
    assert autotune.check_promise(digest, promised, promised * 0.7) is None  # batching and the optimizer cost that
    message = autotune.check_promise(digest, promised, promised * 0.3)
    assert "30% of the 195 img/s" in message and "measured again by the next run" in message
    assert autotune.cached_entry(digest)["stale"]["reason"].startswith("a run trained at 58 img/s")
    assert probe.choose().choice["source"] == "probe" and probe.calls
    assert autotune.cached_entry(digest).get("stale") is None  # the new measurement replaced it


def test_a_promise_against_a_replaced_entry_leaves_the_new_one_alone(probe):
    digest = probe.choose().choice["digest"]
    message = autotune.check_promise(digest, 1_000_000.0, 10.0)  # a promise the entry no longer holds
    assert "measured again or flagged since" in message and not autotune.cached_entry(digest).get("stale")
    uncached = autotune.check_promise("feedfacefeedface", 1000.0, 10.0)
    assert "not cached, so the next run measures again anyway" in uncached


def _epoch(rate: float):
    from cnnbench.engine import EpochResult

    return EpochResult(epoch=1, lr=1e-3, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5, seconds=1.0,
                       images_per_s=rate, improved=True, stop=False)  # fmt: skip


def _trainer(augment: str = "none", *, streamed: bool = False):
    """What PromiseWatch reads of a Trainer: its batches, its process count and its augmentation."""
    from cnnbench.data.augment import parse_augment
    from cnnbench.data.prepare import SplitData
    from cnnbench.engine import InMemoryBatches

    split = SplitData(labels=torch.zeros(4, dtype=torch.int64), images=torch.zeros(4, 1, 2, 2, dtype=torch.uint8))
    batches = object() if streamed else InMemoryBatches(split, 2, torch.device("cpu"))
    return SimpleNamespace(train_batches=batches, world=1, preprocess=SimpleNamespace(augment=parse_augment(augment)))


def _promise_lines(caplog) -> list[str]:
    """What the promise watch logged (its module's lines only)."""
    return [r.getMessage() for r in caplog.records if r.name == "cnnbench.engine.autotune_promise"]


def test_promise_watch_checks_the_median_of_the_first_three_epochs_once(probe, caplog):
    caplog.set_level(logging.INFO, logger="cnnbench")
    choice = probe.choose().choice
    trainer = _trainer()
    watch = autotune.PromiseWatch.for_choice(choice)
    for rate in (10, 190, 20):  # a slow first epoch alone would not do it; the median of three (20) does
        assert not _promise_lines(caplog)
        watch.on_epoch_end(trainer, _epoch(rate))
    logged = _promise_lines(caplog)
    assert len(logged) == 1 and "20 img/s" in logged[0]
    assert autotune.cached_entry(choice["digest"])["stale"]
    watch.on_epoch_end(trainer, _epoch(1))
    assert len(_promise_lines(caplog)) == 1  # once per run

    caplog.clear()
    streamed = _trainer(streamed=True)  # file-backed batches: decoding sets the speed
    watch = autotune.PromiseWatch.for_choice(choice)
    for rate in (1, 1, 1):
        watch.on_epoch_end(streamed, _epoch(rate))
    assert not _promise_lines(caplog)
    assert autotune.PromiseWatch.for_choice(None) is None


def test_an_augmented_run_is_held_to_the_lower_floor(probe, caplog):
    caplog.set_level(logging.INFO, logger="cnnbench")
    choice = probe.choose().choice
    promised = choice["promised_images_per_s"]
    trainer = _trainer("s2")
    watch = autotune.PromiseWatch.for_choice(choice)
    for _ in range(3):  # 40%: what warping a batch costs the tiny mnist-722, a normal run
        watch.on_epoch_end(trainer, _epoch(0.4 * promised))
    assert not _promise_lines(caplog)
    watch = autotune.PromiseWatch.for_choice(choice)
    for _ in range(3):
        watch.on_epoch_end(trainer, _epoch(0.2 * promised))
    logged = _promise_lines(caplog)
    assert len(logged) == 1 and "20% of the" in logged[0]


def test_promise_watch_flags_a_real_run_through_the_engine(probe, data_root, tmp_path, caplog):
    from cnnbench.runs.kinds import run as run_spec
    from tests.helpers import digits, spec

    probe.rates = lambda precision, channels_last, threads, n: 1e9  # a promise no run keeps
    choice = probe.choose().choice
    caplog.set_level(logging.INFO, logger="cnnbench")
    result = run_spec(spec(digits(data_root), "mnist-722", epochs=3, precision="fp32", channels_last=False, threads=1),
                      out=tmp_path, callbacks=[autotune.PromiseWatch.for_choice(choice)])  # fmt: skip
    assert result.status == "completed"
    logged = _promise_lines(caplog)
    assert len(logged) == 1 and "the cached choice will be measured again by the next run" in logged[0]
    assert autotune.cached_entry(choice["digest"])["stale"]


def test_models_probe_shows_the_entry_and_refresh_measures_it_again(cli, probe):
    none = cli("models", "--probe", "mnist-722", "--json")
    assert none.code == 0, none.err
    report = none.json()
    assert report["entry"] is None and report["batch_size"] == 128 and report["machine"]["cpu"] == "Test CPU 9000"
    assert report["cache"] == str(autotune.cache_path())
    assert probe.calls == []  # showing never measures
    fresh = cli("models", "--probe", "mnist-722", "--refresh", "--json").json()
    assert probe.calls and fresh["measured_now"]["cached"]
    entry = fresh["entry"]
    assert (entry["precision"], entry["channels_last"], entry["threads"]) == ("bf16", True, 2)
    assert entry["images_per_s"]["bf16/cl 2 threads"] == 195 and entry["stale"] is None and entry["measured"]
    probe.calls.clear()
    shown = cli("models", "--probe", "mnist-722", "--dataset", "digits", "--size", "28", "--json").json()
    assert shown["entry"] == entry and probe.calls == []  # digits at 28x28 is mnist-722's seed input: the same key
    autotune.check_promise(shown["digest"], entry["promised_images_per_s"], 1.0)
    table = cli("models", "--probe", "mnist-722")
    assert table.code == 0 and "bf16" in table.out and "yes: a run trained at 1 img/s" in table.out
    again = cli("models", "--probe", "mnist-722", "--refresh", "--batch-size", "64", "--json").json()
    assert again["batch_size"] == 64 and again["digest"] != shown["digest"] and again["entry"]["stale"] is None


def test_models_probe_refuses_what_it_cannot_key(cli):
    assert cli("models", "--probe", "fit:7500").code == 2  # sized by a dataset
    assert cli("models", "--refresh").code == 2
    assert cli("models", "--size", "28").code == 2
    bad = cli("models", "--probe", "mnist-722", "--batch-size", "0")
    assert bad.code == 2 and "--batch-size 0" in bad.err


def test_train_and_models_probe_key_a_configuration_alike(cli, probe, data_root, tmp_path):
    from cnnbench.runs import resources
    from cnnbench.engine import DEFAULT_THREADS
    from tests.helpers import DIGITS28

    resources.forget()  # a choice held by this process from another test would skip the probe
    try:
        run = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--epochs", "1", "--out", tmp_path,
                  "--json", "--quiet")  # fmt: skip
    finally:
        resources.forget()
        torch.set_num_threads(DEFAULT_THREADS)
    assert run.code == 0, run.err
    device = json.loads((Path(run.json()["run_dir"]) / "config.json").read_text())["device"]
    entry = cli("models", "--probe", "mnist-722", *DIGITS28, "--batch-size", "128", "--json").json()["entry"]
    assert entry is not None and (entry["precision"], entry["channels_last"]) == (device["precision"],
                                                                                  device["channels_last"])  # fmt: skip
