"""Keras's side of time_to_accuracy.py: train one seed model in Keras on the arrays it is given until the test accuracy
first reaches the target, and print {"seconds": ..., "epochs": ...} as the last line.

Run by time_to_accuracy.py --keras-python PY with a Python that has tensorflow-cpu (not cnnbench's environment):

    keras-env/bin/python benchmarks/keras_time_to_accuracy.py DATA.npz --model mnist-7498 --target 0.95

DATA.npz holds x_train, y_train, x_test, y_test: float32 images in NHWC, normalised as cnnbench normalises them, and
int labels. The model is the one `../shared/bench/keras_peer.py` builds for the speed comparison (--peer moves it).
The clock runs over one `fit` call, its graph tracing included (Keras pays it on every run); the model is built and
compiled before it starts, and the test accuracy is measured after each epoch by a callback whose own time is taken
off the clock. Training stops at the epoch that reaches the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="mnist-7498")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "bench")
    args = parser.parse_args()
    sys.path.insert(0, str(args.peer))
    import keras
    import numpy as np
    from keras_peer import MODELS  # the same Keras models as the speed comparison

    keras.utils.set_random_seed(args.seed)
    data = np.load(args.data)
    build, _, classes = MODELS[args.model]
    model = build()
    if model.input_shape[1:] != data["x_train"].shape[1:]:
        raise SystemExit(f"{args.model} takes {model.input_shape[1:]}, the data is {data['x_train'].shape[1:]}")
    binary = classes == 2
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(args.lr), loss, metrics=["accuracy"])

    class Watch(keras.callbacks.Callback):
        """The test accuracy after each epoch, its own time kept off the clock; training stops at the target."""

        reached: int | None = None
        off_clock = 0.0

        def on_epoch_end(self, epoch, logs=None):
            start = time.perf_counter()
            _, accuracy = self.model.evaluate(data["x_test"], data["y_test"], batch_size=1024, verbose=0)
            if accuracy >= args.target and self.reached is None:
                self.reached, self.model.stop_training = epoch + 1, True
            self.off_clock += time.perf_counter() - start

    watch = Watch()
    start = time.perf_counter()
    model.fit(data["x_train"], data["y_train"], batch_size=args.batch_size, epochs=args.max_epochs, shuffle=True,
              verbose=0, callbacks=[watch])  # fmt: skip
    seconds = time.perf_counter() - start - watch.off_clock
    print(json.dumps({"seconds": seconds if watch.reached else float("nan"), "epochs": watch.reached or args.max_epochs,
                      "framework": f"keras {keras.__version__}"}))


if __name__ == "__main__":
    main()
