"""Does bf16 autocast cost accuracy? The S1 recipe on the bundled digits, fp32 against bf16, over several seeds.

    .venv/bin/python benchmarks/precision_accuracy.py [--seeds 3] [--epochs 60]

`cnnbench train` picks bf16 on a CPU when it measures it faster (autotune), so this is the check that the choice is
free: the same models, seeds and data, once in each precision, test accuracy as mean ± std. Writes
results/precision_accuracy.md. Data: scikit-learn's digits at 28x28 (real images, 359 in the test split).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import PrepareOptions
from cnnbench.evaluate.evaluation import evaluate_run
from cnnbench.core.storage import write_text_atomic
from cnnbench.spec.run import ModelChoice, RunSpec
from cnnbench.runs.kinds import run as run_spec

MODELS = ("mnist-722", "mnist-7498", "fit:7500")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    lines = [f"S1 recipe (Adam 1e-3, batch 256, {args.epochs} epochs) on digits at 28x28, seeds 0..{args.seeds - 1}; "
             "test accuracy, mean ± std", "", "| model | fp32 | bf16 autocast | difference |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as scratch:
        data = PrepareOptions(dataset="digits", root=Path(scratch) / "data", size=28)
        for model in MODELS:
            accuracy = {}
            for precision in ("fp32", "bf16"):
                accuracy[precision] = []
                for seed in range(args.seeds):
                    config = TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, seed=seed,
                                         precision=precision, channels_last=False, device="cpu")  # fmt: skip
                    spec = RunSpec(data=data, model=ModelChoice(name=model), train=config)
                    run = run_spec(spec, out=Path(scratch) / "runs").run
                    accuracy[precision].append(evaluate_run(run.path, split="test", device="cpu")["accuracy"])
            a, b = (statistics.mean(accuracy[p]) for p in ("fp32", "bf16"))
            sa, sb = (statistics.stdev(accuracy[p]) if args.seeds > 1 else 0.0 for p in ("fp32", "bf16"))
            lines.append(f"| {model} | {a:.4f} ± {sa:.4f} | {b:.4f} ± {sb:.4f} | {b - a:+.4f} |")
            print(lines[-1], flush=True)
    write_text_atomic(Path("results/precision_accuracy.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
