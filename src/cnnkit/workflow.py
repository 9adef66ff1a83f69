"""The orchestrating functions: the only place that knows the order of the steps.

config -> seed -> data -> run folder -> model -> fit -> evaluate -> metrics and plots
"""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cnnkit.config import Config
from cnnkit.errors import ConfigError
from cnnkit.metrics import EvalResult
from cnnkit.runs import CONFIG_FILE, Run, create_run, now, open_run, write_json, write_text


def _say(message: str) -> None:
    print(f"cnnkit: {message}", flush=True)


def train(config: Config, runs_dir: str | Path = "runs", verbose: int | None = None) -> Run:
    """Train ``config`` into a new folder under ``runs_dir``; return the finished run."""
    from cnnkit import env
    from cnnkit.data import load_dataset
    from cnnkit.models import check_hparams

    # Everything that can be refused is checked before a run folder exists.
    check_hparams(config.model.name, config.model.params)
    data = load_dataset(config.data, config.seed)
    keras = env.import_keras()
    keras.utils.set_random_seed(config.seed)
    policy = env.resolve_precision(config.train.precision)
    keras.mixed_precision.set_global_policy(policy)

    run = create_run(runs_dir, config.name or "train")
    write_text(run.file(CONFIG_FILE), config.to_yaml())
    write_json(run.file("env.json"), env.describe())
    run.update_meta(
        name=run.name,
        status="running",
        created=now(),
        argv=list(sys.argv),
        dataset=data.summary(),
        classes=list(data.class_names),
        input_shape=list(data.input_shape),
        model=config.model.name,
        precision=policy,
        backend=env.backend_name(),
    )
    _say(
        f"{data.name}: {len(data.train)} train, {len(data.val) if data.val else 0} validation, "
        f"{len(data.test)} test images {data.input_shape} from {data.source}"
    )
    _say(
        f"model {config.model.name}, precision {policy}, backend {env.backend_name()}, run {run.path}"
    )
    try:
        result = _train_and_evaluate(config, data, run, verbose)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.update_meta(status=status, ended=now(), error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    _say(
        f"test accuracy {result.accuracy:.4f}, test loss {result.loss:.4f} ({result.num_images} images)"
    )
    return run


def _train_and_evaluate(config: Config, data: Any, run: Run, verbose: int | None) -> EvalResult:
    from cnnkit import report, trainer
    from cnnkit.data.augment import create_augmenter
    from cnnkit.metrics import classification_report, evaluate_model
    from cnnkit.models import create_model
    from cnnkit.runs import load_model

    net = create_model(config.model.name, data.input_shape, data.num_classes, **config.model.params)
    lines: list[str] = []
    net.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    write_text(run.file("model_summary.txt"), "\n".join(lines) + "\n")
    augmenter = create_augmenter(config.augment, config.seed)

    fitted = trainer.fit(
        net, data.train, data.val, data.num_classes, config.train, run, augmenter, verbose
    )
    keep = config.train.keep
    best = run.checkpoints / "best.keras"
    if keep == "best" and not best.is_file():
        _say("no validation split, so the last epoch's weights are kept")
        keep = "last"
    source = best if keep == "best" else run.checkpoints / "last.keras"
    tmp = run.file(".model.keras.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(run.model_path)

    model = load_model(run.model_path)  # evaluate what was saved, not what is in memory
    result = evaluate_model(model, data.test, list(data.class_names), config.train.eval_batch_size)
    write_json(run.file("metrics.json"), {"test": result.to_dict(), "kept": keep})
    write_text(run.file("classification_report.txt"), classification_report(result))
    report.write_plots(run.path, result)
    speeds = fitted.history.get("train_images_per_second") or [0.0]
    run.update_meta(
        status="complete",
        ended=now(),
        epochs=fitted.epochs,
        stopped_early=fitted.stopped_early,
        best_epoch=fitted.best_epoch,
        kept=keep,
        train_seconds=round(fitted.seconds, 1),
        train_images_per_second=statistics.median(speeds),  # median over epochs
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    return result


def evaluate(
    run: Run | str | Path, overrides: Iterable[str] = (), batch_size: int | None = None
) -> EvalResult:
    """Evaluate ``run``'s model on its test split again (``data.*`` overrides, e.g. ``data.path``)."""
    from cnnkit.config import parse_override
    from cnnkit.data import load_dataset
    from cnnkit.metrics import evaluate_model
    from cnnkit.runs import load_model

    run = open_run(run)
    config = run.config()
    changes = dict(parse_override(item) for item in overrides)
    for key in changes:
        if not key.startswith("data."):
            raise ConfigError(
                f"evaluate takes data.* overrides only (such as data.path), not {key!r}"
            )
    config = config.replace(**changes)
    data = load_dataset(config.data, config.seed)
    if list(data.class_names) != run.class_names:
        raise ConfigError(
            f"the dataset's classes {list(data.class_names)} differ from the run's {run.class_names}"
        )
    model = load_model(run.model_path)
    return evaluate_model(
        model, data.test, run.class_names, batch_size or config.train.eval_batch_size
    )
