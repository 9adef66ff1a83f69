"""The orchestrating functions: the only place that knows the order of the steps.

    config -> data -> run folder -> seed, precision -> model -> fit -> evaluate -> metrics, plots

``train`` starts a new run folder; ``resume`` continues one from its checkpoint with the same
config, so that its final model, metrics and plots are those of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import Config
from cnnkit.errors import ConfigError, RunError, TrainingInterrupted
from cnnkit.metrics import EvalResult
from cnnkit.runs import (
    CONFIG_FILE,
    Run,
    create_run,
    lock_run,
    now,
    open_run,
    open_run_folder,
    require_free_space,
    write_json,
    write_text,
)

# Changing these on resume moves nothing but where the data is read from (report.* too: it
# only decides what is drawn at the end).
_LOCATION_KEYS = ("data.path", "data.download", "data.cache", "data.cache_mb")
# These define the model, the data or the optimizer's variables: a checkpoint cannot carry over
# a change to them, even with --force (train a new run instead).
_FIXED_ON_RESUME = ("seed", "name", "data.", "augment.", "model.", "train.optimizer",
                    "train.batch_size", "train.precision")  # fmt: skip


def _say(message: str) -> None:
    print(f"cnnkit: {message}", flush=True)


def train(
    config: Config,
    runs_dir: str | Path = "runs",
    verbose: int | None = None,
    callbacks: list[Any] | None = None,
) -> Run:
    """Train ``config`` into a new folder under ``runs_dir``; return the finished run.

    ``callbacks``: extra Keras callbacks, called after cnnkit's own at each epoch.
    """
    from cnnkit import env
    from cnnkit.data import load_dataset
    from cnnkit.models import check_hparams, check_weights, fetch_weights

    # Everything that can be refused is checked before a run folder exists.
    _check_tensorboard(config)
    check_hparams(config.model.name, config.model.params)
    check_weights(config.model.name, config.model.weights)
    data = load_dataset(config.data, config.seed)
    fetch_weights(config.model.name, config.model.weights, data.input_shape, data.num_classes)
    policy = env.resolve_precision(config.train.precision)
    budget = None
    if config.train.budget:
        config, budget = _fit_budget(config, data, policy)
        if "train_images" in budget:  # a sample of the training images: drawn as on resume
            data = load_dataset(config.data, config.seed)
    run = create_run(runs_dir, config.name or "train")
    with lock_run(run):
        write_text(run.file(CONFIG_FILE), config.to_yaml())  # first: it makes the folder resumable
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
            deterministic=config.train.deterministic,
            budget=budget,
        )
        write_json(run.file("env.json"), env.describe())
        if data.skipped:
            _write_skipped(run, data.skipped)
        _run(config, data, run, policy, verbose, False, callbacks)
    return run


SKIPPED_FILE = "skipped_files.csv"


def _check_tensorboard(config: Config) -> None:
    import importlib.util

    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard=true needs the tensorboard package: pip install 'cnnkit[tensorboard]'"
        )


def _write_skipped(run: Run, skipped: tuple[tuple[str, str], ...]) -> None:
    """List the files the dataset left out, with the reason, and say so."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "reason"])
    writer.writerows(skipped)
    write_text(run.file(SKIPPED_FILE), out.getvalue())
    _say(
        f"{len(skipped)} files or folders left out (listed with the reason in {run.file(SKIPPED_FILE)})"
    )


# A budget that fits less than one epoch trains smaller batches, down to _SHORT_BATCH, so that
# its one short schedule still takes about _SHORT_STEPS optimizer steps: at the fast preset's
# batch of 1024, two minutes here are ~40 steps. Its rates are per example and carry over.
_SHORT_STEPS = 150
_SHORT_BATCH = 256


def few_steps_warning(images: int, batch: int, epochs: int) -> str | None:
    """A warning when training makes fewer than 100 optimizer steps, suggesting a batch that
    makes about 100 (a power of two, at least 16, smaller than ``batch``) or more epochs.

    The fast recipe's batch of 1024 suits 50,000 images; a small folder gets few updates.
    """
    steps = -(-images // batch) * epochs
    if steps >= 100:
        return None
    fits = min(images * epochs // 100, batch // 2)
    smaller = max(16, 2 ** int(math.log2(max(1, fits))))
    advice = f"a smaller batch (train.batch_size={smaller}) or more epochs"
    if smaller >= batch:
        advice = "more epochs"
    return (
        f"warning: {images} training images at batch {batch} make only {steps} optimizer steps "
        f"in all; {advice} will likely learn more"
    )


def _fit_budget(config: Config, data: Any, policy: str) -> tuple[Config, dict[str, float]]:
    """Set train.epochs so that training fits in train.budget seconds, at a measured speed.

    The whole schedule (warm-up, decay, lookahead) then spans those epochs: a short budget gets
    a complete short schedule rather than the start of a long one. The speed is measured at a
    batch of at most 256 (quick; on a CPU the speed hardly depends on the batch, on a GPU a
    larger batch is faster, so the estimate errs on the side of fitting).
    """
    import dataclasses
    import time

    from cnnkit import env, trainer
    from cnnkit.models import create_model

    start = time.perf_counter()
    keras = env.import_keras()
    keras.mixed_precision.set_global_policy(policy)

    def build() -> Any:
        return create_model(
            config.model.name, data.input_shape, data.num_classes, config.model.weights,
            **config.model.params,
        )  # fmt: skip

    probe = dataclasses.replace(config.train, batch_size=min(config.train.batch_size, _SHORT_BATCH))
    speed = trainer.measure_speed(build, data.train, data.num_classes, probe, config.augment)
    spent = time.perf_counter() - start
    # 5 % for what an epoch costs beyond its steps (validation, checkpoints, augmentation).
    images = (config.train.budget - spent) * speed * 0.95
    epochs = int(images // len(data.train))
    record = {"seconds": config.train.budget, "images_per_second": round(speed, 1),
              "calibration_seconds": round(spent, 1), "epochs": max(epochs, 1)}  # fmt: skip
    if epochs >= 1:
        _say(
            f"budget {config.train.budget:g} s: {speed:.0f} images/s measured, so {epochs} epochs "
            f"(was {config.train.epochs})"
        )
        return config.replace(**{"train.epochs": epochs}), record
    # Less than one epoch fits: one epoch on a stratified sample of the size that does (the
    # whole schedule still runs, over fewer steps). The sample is drawn before the validation
    # split, like data.train_subset, which records it for resume and for the run's config.
    batch = config.train.batch_size
    while batch > _SHORT_BATCH and images / batch < _SHORT_STEPS:
        batch //= 2
    keep = 1.0 - config.data.val_split
    subset = int(images / keep)
    if subset < max(2 * batch, 10 * data.num_classes):
        raise ConfigError(
            f"train.budget={config.train.budget:g} s is too short: {speed:.0f} training images/s "
            f"here, after {spent:.0f} s measuring it; give at least "
            f"{spent + 2 * batch / speed / 0.95 + 1:.0f} s"
        )
    smaller = (
        f", batches of {batch} (was {config.train.batch_size})"
        if batch != config.train.batch_size
        else ""
    )
    _say(
        f"budget {config.train.budget:g} s: {speed:.0f} images/s measured, so 1 epoch on "
        f"{int(subset * keep)} of the {len(data.train)} training images{smaller}"
    )
    record["train_images"] = int(subset * keep)
    record["batch_size"] = batch
    changes = {"train.epochs": 1, "data.train_subset": subset, "train.batch_size": batch}
    return config.replace(**changes), record


def resume(
    run: Run | str | Path,
    overrides: Iterable[str] = (),
    force: bool = False,
    verbose: int | None = None,
    callbacks: list[Any] | None = None,
) -> Run:
    """Continue ``run`` from its last checkpoint, with its own config.

    ``overrides`` may move the data (``data.path=...``); any other change is refused unless
    ``force`` is set, and is then recorded in run.json (e.g. ``train.epochs=150`` to train longer).
    """
    from cnnkit.checkpoint import STATE_FILE
    from cnnkit.config import parse_override
    from cnnkit.data import load_dataset

    run = open_run_folder(run)
    meta = run.meta()
    config = run.config()
    changes = dict(parse_override(item) for item in overrides)
    current = _flat(config)
    changed = {
        k: v
        for k, v in changes.items()
        if k not in _LOCATION_KEYS and not k.startswith("report.") and current.get(k) != v
    }
    fixed = [k for k in changed if k.startswith(_FIXED_ON_RESUME)]
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change on resume (the checkpoint depends on it); "
            f"train a new run with the new setting instead"
        )
    if changed and not force:
        listed = ", ".join(f"{k}: {current.get(k)!r} -> {v!r}" for k, v in changed.items())
        raise ConfigError(
            f"resume keeps the run's config, and this would change it ({listed}); "
            f"add --force to change it anyway (the change is recorded in run.json)"
        )
    new_config = config.replace(**changes)
    longer = "train.epochs" in changed and new_config.train.epochs > int(meta.get("epochs") or 0)
    if meta.get("status") == "complete" and not longer:
        raise RunError(
            f"run {run.path} is complete; nothing to resume "
            f"(to train it longer: --force train.epochs=N with N > {meta.get('epochs')})"
        )
    _check_tensorboard(new_config)
    data = load_dataset(new_config.data, new_config.seed)
    if list(data.class_names) != meta.get("classes"):
        raise ConfigError(f"the data's classes {list(data.class_names)} differ from the run's")
    with lock_run(run):
        state_file = run.checkpoints / STATE_FILE
        start = (
            "from its last checkpoint" if state_file.is_file() else "from the start (no checkpoint)"
        )
        if changes:
            write_text(run.file(CONFIG_FILE), new_config.to_yaml())
        resumes = [
            *meta.get("resumes", []),
            {"at": now(), "argv": list(sys.argv), "changes": changed,
             "previous_status": meta.get("status"), "previous_error": meta.get("error")},
        ]  # fmt: skip
        run.update_meta(status="running", error=None, resumes=resumes)
        _say(f"resuming {run.path} {start}")
        _run(new_config, data, run, meta["precision"], verbose, True, callbacks)
    return run


def _flat(config: Config) -> dict[str, Any]:
    from cnnkit.config import flatten

    return flatten(config.to_dict())


def _run(
    config: Config,
    data: Any,
    run: Run,
    policy: str,
    verbose: int | None,
    resume: bool,
    callbacks: list[Any] | None,
) -> None:
    """Seed, build, fit (or continue), then evaluate and draw; record the outcome in run.json."""
    from cnnkit import env

    keras = env.import_keras()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(policy)
    if config.train.deterministic:
        env.enable_determinism()
    _say(
        f"{data.name}: {len(data.train)} train, {len(data.val) if data.val else 0} validation, "
        f"{len(data.test)} test images {data.input_shape} from {data.source}"
    )
    _say(
        f"model {config.model.name}, precision {policy}, backend {env.backend_name()}, run {run.path}"
    )
    if warning := few_steps_warning(len(data.train), config.train.batch_size, config.train.epochs):
        _say(warning)
    try:
        result = _fit_and_evaluate(config, data, run, verbose, resume, callbacks)
    except TrainingInterrupted:
        run.update_meta(status="interrupted", ended=now())
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, the last one stands
        run.update_meta(status="interrupted", ended=now())
        raise TrainingInterrupted(
            f"interrupted; resume from the last checkpoint with: cnnkit train --resume {run.path}"
        ) from None
    except BaseException as exc:
        run.update_meta(status="failed", ended=now(), error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    _say(
        f"test accuracy {result.accuracy:.4f}, test loss {result.loss:.4f} ({result.num_images} images)"
    )


def _fit_and_evaluate(
    config: Config,
    data: Any,
    run: Run,
    verbose: int | None,
    resume: bool,
    callbacks: list[Any] | None,
) -> EvalResult:
    from cnnkit import report, trainer
    from cnnkit.checkpoint import remove_stale
    from cnnkit.metrics import classification_report, predict_and_score
    from cnnkit.models import create_model
    from cnnkit.runs import load_model

    net = create_model(
        config.model.name, data.input_shape, data.num_classes, config.model.weights,
        **config.model.params,
    )  # fmt: skip
    # A checkpoint holds about three copies of the weights (weights and Adam's two moments), and
    # is written beside the last one; the networks (best, last, model) are one copy each.
    require_free_space(run.path, net.count_params() * 4 * 12 + 50_000_000)
    lines: list[str] = []
    net.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    write_text(run.file("model_summary.txt"), "\n".join(lines) + "\n")
    run.checkpoints.mkdir(exist_ok=True)
    remove_stale(run.checkpoints)
    remove_stale(run.path)

    fitted = trainer.fit(
        net, data.train, data.val, data.num_classes, config.train, run, config.seed,
        config.augment, verbose, resume, callbacks,
    )  # fmt: skip
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
    result, probabilities = predict_and_score(
        model, data.test, list(data.class_names), config.train.eval_batch_size, config.train.tta
    )
    report.save_predictions(run.file(report.PREDICTIONS_FILE), probabilities, data.test.y)
    write_json(run.file("metrics.json"), {"test": result.scores(), "kept": keep})
    write_text(run.file("classification_report.txt"), classification_report(result))
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
        eval_seconds=result.seconds,
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if not config.report.enabled:
        return result
    try:
        written = report.write_report(
            run.path, result, probabilities, data.test.y, data.test.x, model
        )
        _say(f"report {written.path} ({written.seconds:.1f} s)")
    except Exception as exc:  # the model and its metrics are saved; the page can be redrawn
        _say(
            f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
            f"try `cnnkit report {run.path} --debug`"
        )
    return result


def evaluate(
    run: Run | str | Path, overrides: Iterable[str] = (), batch_size: int | None = None
) -> EvalResult:
    """Evaluate ``run``'s model on its test split again (``data.*`` overrides, e.g. ``data.path``)."""
    from cnnkit.data import load_dataset
    from cnnkit.metrics import evaluate_model
    from cnnkit.runs import load_model

    run = open_run(run)
    config = _with_data_overrides(run.config(), overrides, "evaluate")
    data = load_dataset(config.data, config.seed)
    if list(data.class_names) != run.class_names:
        raise ConfigError(
            f"the dataset's classes {list(data.class_names)} differ from the run's {run.class_names}"
        )
    model = load_model(run.model_path)
    return evaluate_model(  # with the run's test-time augmentation, as train evaluated it
        model, data.test, run.class_names, batch_size or config.train.eval_batch_size,
        config.train.tta,
    )  # fmt: skip


def _with_data_overrides(config: Config, overrides: Iterable[str], verb: str) -> Config:
    from cnnkit.config import parse_override

    changes = dict(parse_override(item) for item in overrides)
    for key in changes:
        if not key.startswith("data."):
            raise ConfigError(
                f"{verb} takes data.* overrides only (such as data.path), not {key!r}"
            )
    return config.replace(**changes)


def report(run: Run | str | Path, overrides: Iterable[str] = ()) -> Any:
    """Draw ``run``'s report page again from what the run saved.

    The test images (for the galleries and the heatmaps) are read from the run's data; where
    that is not on this machine (``data.*`` overrides say where it is), the page is drawn without
    them and says so. Test predictions come from predictions.npz, or are made once and saved.
    """
    from cnnkit import report as pages
    from cnnkit.data import load_dataset
    from cnnkit.errors import CnnkitError
    from cnnkit.metrics import predict_probabilities
    from cnnkit.runs import load_model

    run = open_run(run)
    metrics_file = run.file("metrics.json")
    if not metrics_file.is_file():
        raise RunError(f"run {run.path} has no metrics.json; it did not finish evaluating")
    result = EvalResult.from_dict(json.loads(metrics_file.read_text(encoding="utf-8"))["test"])
    config = _with_data_overrides(run.config(), overrides, "report")
    notes: list[str] = []
    test = None
    try:
        data = load_dataset(config.data, config.seed)
        if list(data.class_names) != run.class_names:
            raise ConfigError(f"its classes {list(data.class_names)} differ from the run's")
        test = data.test
    except CnnkitError as exc:
        notes.append(
            f"test images not shown: the run's data could not be read ({exc}); "
            f"give its place with data.path=... to include them"
        )
    predictions = run.file(pages.PREDICTIONS_FILE)
    probabilities = labels = None
    if predictions.is_file():
        probabilities, labels = pages.load_predictions(predictions)
        if test is not None and not np.array_equal(labels, test.y):
            notes.append(
                "test images not shown: the data read now is not the test set the run was "
                "evaluated on (its labels differ)"
            )
            test = None
    model = None
    if test is not None:
        model = load_model(run.model_path)
        if probabilities is None:  # a run from before predictions were saved: predict once
            probabilities = predict_probabilities(
                model, test.x, config.train.eval_batch_size, config.train.tta
            )
            labels = test.y
            pages.save_predictions(predictions, probabilities, labels)
    return pages.write_report(
        run.path, result, probabilities, labels, None if test is None else test.x, model, notes
    )
