"""cnnkit.figures: the training curves and the confusion matrix written as pictures."""

from __future__ import annotations

from pathlib import Path

from cnnkit.figures import plot_confusion, plot_curve
from cnnkit.metrics import score
from cnnkit.runs import Run
from test_metrics import _case


def test_plots_are_written(tmp_path: Path) -> None:
    probabilities, split = _case()
    result = score(probabilities, split, ["a", "b", "c"])
    run = Run(tmp_path)
    run.write_history({"accuracy": [0.5, 0.6], "loss": [1.2, 1.0], "val_accuracy": [0.4, 0.5],
                       "val_loss": [1.3, 1.1]})  # fmt: skip
    assert run.file("history.csv").read_text().splitlines()[:2] == [
        "epoch,accuracy,loss,val_accuracy,val_loss",
        "0,0.5,1.2,0.4,1.3",
    ]
    history = run.history()
    assert history["val_loss"] == [1.3, 1.1] and history["epoch"] == [0.0, 1.0]
    for path in (
        plot_curve(history, "accuracy", tmp_path / "a.png", "Accuracy"),
        plot_confusion(result, tmp_path / "c.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
