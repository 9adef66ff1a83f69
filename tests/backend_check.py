"""What tests/test_backends.py runs in a fresh process per Keras backend (KERAS_BACKEND is read
once, when Keras is imported, so another backend needs another process).

    python tests/backend_check.py recipe RUNS_DIR   -> one JSON line: the checks' findings
    python tests/backend_check.py steps WEIGHTS.npz -> one JSON line: the first steps' losses

``recipe``: the smoke path (the tutorial's CNN with its in-graph augmentation and dropout:
train, evaluate, predict, report), then the fast recipe (whitening, Nesterov SGD with lookahead,
frozen bias, crops and alternating flips, TTA) interrupted by a real Ctrl-C mid-epoch and resumed,
against an uninterrupted run. ``steps``: the fast recipe's first optimizer steps from the weights
in WEIGHTS.npz (written there first when missing), so that backends can be compared step by step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

SMALL = ["data.name=synthetic", "report.enabled=false"]
FAST = [*SMALL, "model.params.widths=[8,16,16]", "train.epochs=2", "train.batch_size=64",
        "train.checkpoint_steps=3", "train.deterministic=true"]  # fmt: skip


def recipe(runs: Path) -> dict[str, Any]:
    import cnnkit
    from cnnkit.env import import_keras
    from cnnkit.errors import TrainingInterrupted

    keras = import_keras()
    found: dict[str, Any] = {"backend": keras.backend.backend()}

    smoke = cnnkit.train(
        cnnkit.load_config("smoke", overrides=["data.name=synthetic", "train.epochs=1",
                                               "model.params.filters=[8,16,16]",
                                               "model.params.dense=32", "name=smoke"]),
        runs, verbose=0,
    )  # fmt: skip
    meta = smoke.meta()
    found["smoke"] = {
        "status": meta["status"],
        "backend": meta["backend"],
        "report": (smoke.path / "report.html").is_file(),
        "evaluate": cnnkit.evaluate(smoke).accuracy,
        "test_accuracy": meta["test_accuracy"],
    }
    pictures = runs / "pictures"
    pictures.mkdir()
    from PIL import Image

    data = cnnkit.load_dataset(smoke.config().data, 0)
    for i in range(3):
        Image.fromarray(np.asarray(data.test.x[i])).save(pictures / f"{i}.png")
    predictions, errors = cnnkit.predict(smoke, [str(pictures)], top_k=2)
    found["smoke"]["predicted"] = [str(e) for e in errors] or [len(p.top) for p in predictions]

    reference = cnnkit.train(cnnkit.load_config("fast", overrides=[*FAST, "name=reference"]),
                             runs, verbose=0)  # fmt: skip

    class CtrlC(keras.callbacks.Callback):  # type: ignore[misc]
        """A real SIGINT to this process after the 7th step (mid-epoch: 10 steps an epoch)."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.steps += 1
            if self.steps == 7:
                os.kill(os.getpid(), signal.SIGINT)

    interrupted = runs / "interrupted"
    try:
        cnnkit.train(cnnkit.load_config("fast", overrides=[*FAST, "name=interrupted"]), runs,
                     verbose=0, callbacks=[CtrlC()])  # fmt: skip
        found["interrupted"] = False
    except TrainingInterrupted:
        found["interrupted"] = cnnkit.Run(interrupted).meta()["status"]
    resumed = cnnkit.resume(interrupted, verbose=0)
    ours = resumed.load_model().get_weights()
    theirs = reference.load_model().get_weights()
    found["fast"] = {
        "status": resumed.meta()["status"],
        "same_weights": all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)),
        # The epoch resumed part-way has its running means merged: equal to round-off.
        "history_difference": max(
            abs(a - b) / max(abs(b), 1e-12)
            for key in ("loss", "accuracy")
            for a, b in zip(resumed.history()[key], reference.history()[key], strict=True)
        ),
        "epochs": len(resumed.history()["loss"]),
        "test_accuracy": resumed.meta()["test_accuracy"],
        "reference_accuracy": reference.meta()["test_accuracy"],
    }
    return found


def steps(weights: Path, count: int = 6) -> dict[str, Any]:
    from cnnkit import trainer
    from cnnkit.config import load_config
    from cnnkit.data import load_dataset
    from cnnkit.data.augment import EpochAugmenter
    from cnnkit.env import import_keras, set_random_seed
    from cnnkit.models import create_model

    keras = import_keras()
    config = load_config("fast", overrides=FAST)
    set_random_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    net = create_model("fast_cnn", data.input_shape, data.num_classes, widths=[8, 16, 16])
    if weights.is_file():
        with np.load(weights) as saved:
            net.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
    else:
        np.savez(weights, **{f"w{i}": w for i, w in enumerate(net.get_weights())})
    trainer.adapt_layers(net, data.train.x)
    model = trainer.training_model(net, None)
    steps_per_epoch = trainer.steps_per_epoch(len(data.train), config.train.batch_size)
    trainer.compile_phase(model, net, config.train, steps_per_epoch, "all")
    order = trainer.epoch_order(config.seed, 0, len(data.train))
    images = EpochAugmenter(data.train.x, config.augment, config.seed)(0)[order]
    labels = np.eye(data.num_classes, dtype=np.float32)[data.train.y[order]]
    batch = config.train.batch_size
    losses = []
    for i in range(count):
        part = slice(i * batch, (i + 1) * batch)
        losses.append(float(model.train_on_batch(images[part], labels[part])[0]))
    return {"backend": keras.backend.backend(), "losses": losses}


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    result = recipe(where) if mode == "recipe" else steps(where)
    print(json.dumps(result))
