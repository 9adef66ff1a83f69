"""The orchestrating functions: the only place that knows the order of the steps.

    config -> data -> run folder -> seed, precision -> model -> fit -> evaluate -> metrics, report

``train`` starts a new run folder; ``resume`` continues one from its checkpoint with the same
config, so that its final model, metrics and report are those of an uninterrupted run;
``evaluate`` tests a finished run's model again.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cnnkit.calibration import Fitted
from cnnkit.config import Config
from cnnkit.distributed import Group
from cnnkit.errors import ConfigError, RunError, RunStopped, TrainingInterrupted
from cnnkit.metrics import EvalResult
from cnnkit.runs import Run, create_run, lock_run, now, open_run

log = logging.getLogger(__name__)


def train(
    config: Config,
    runs_dir: str | Path = "runs",
    verbose: int | None = None,
    callbacks: list[Any] | None = None,
    frame: Any = None,
) -> Run:
    """Train ``config`` into a new folder under ``runs_dir``; return the finished run.

    ``frame``: a pandas DataFrame to train on as the label table (``data.name=table``), in place
    of a file at ``data.path``; the run keeps a copy with absolute paths (table.csv) and points
    ``data.path`` at it, so that it resumes and evaluates like any other.

    ``verbose``: Keras's progress display (None: a bar on a terminal, a line per epoch
    elsewhere). ``callbacks``: extra Keras callbacks, called after cnnkit's own at each epoch.
    What the run is doing is logged to the ``cnnkit`` logger (:mod:`cnnkit.log`).

    With ``train.distribute=data_parallel`` every process of the group calls this; process 0
    makes and writes the run folder, which every process returns (:mod:`cnnkit.distributed`).
    """
    from cnnkit import distributed, env
    from cnnkit.budget import fit_budget
    from cnnkit.data import load_dataset
    from cnnkit.models import check_hparams, check_weights, fetch_weights

    # First: the processes of a distributed run join before JAX starts its devices.
    group = distributed.join(config.train.distribute, config.train.batch_size)
    # Everything that can be refused is checked before a run folder exists.
    if config.train.tensorboard:
        env.require("tensorboard", "train.tensorboard=true", "tensorboard")
    check_hparams(config.model.name, config.model.params)
    check_weights(config.model.name, config.model.weights)
    data = load_dataset(config.data, config.seed, config.train.calibrate, frame)
    fetch_weights(config.model.name, config.model.weights, data.input_shape, data.num_classes)
    policy = env.resolve_precision(config.train.precision)
    _require_resources(config, data, policy, Path(runs_dir))
    budget = None
    if config.train.budget:
        config, budget = fit_budget(config, data, policy)
        if group.num_processes > 1:  # every process measured (together); process 0's plan holds
            shared = json.loads(group.broadcast(json.dumps([config.to_dict(), budget])))
            config, budget = Config.from_dict(shared[0]), shared[1]
        if "train_images" in budget:  # a sample of the training images: drawn as on resume
            data = load_dataset(config.data, config.seed, config.train.calibrate, frame)
    if not group.primary:
        run = Run(Path(group.broadcast("")))
        _run(config, data, run, policy, verbose, False, callbacks, group)
        return run
    run = create_run(runs_dir, config.name or "train")
    group.broadcast(str(run.path))
    with lock_run(run):
        if frame is not None:
            from cnnkit.data.table import as_csv

            table = run.write_table(as_csv(frame, config.data))
            config = config.replace(**{"data.path": str(table.resolve()),
                                       "data.outside_paths": True})  # fmt: skip
        run.write_config(config)  # first: it makes the folder resumable
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
            distributed=distributed.describe(group) if group.distributed else None,
        )
        run.write_env(env.describe())
        named = run.write_files({"train": data.train, "val": data.val,
                                 "calibration": data.held_out, "test": data.test},
                                list(data.class_names))  # fmt: skip
        if named:
            log.info("which file is which image of each split: %s", named)
        if data.skipped:
            listed = run.write_skipped(data.skipped)
            log.info("%d files or folders left out (listed with the reason in %s)",
                     len(data.skipped), listed)  # fmt: skip
        _run(config, data, run, policy, verbose, False, callbacks, group)
    return run


def resume(
    run: Run | str | Path,
    overrides: Iterable[str] = (),
    force: bool = False,
    verbose: int | None = None,
    callbacks: list[Any] | None = None,
) -> Run:
    """Continue ``run`` from its last checkpoint, with its own config.

    ``overrides`` may move the data (``data.path=...``) or change ``train.distribute``, with any
    number of processes (the checkpoint is the same for all); any other change is refused unless
    ``force`` is set, and is then recorded in run.json (e.g. ``train.epochs=150`` to train longer).
    Every process of a distributed run calls this; only process 0 writes.
    """
    from cnnkit import distributed, env
    from cnnkit.config import resume_config
    from cnnkit.data import load_dataset

    run = open_run(run, model=False)
    meta = run.meta()
    config = run.config()
    new_config, changed = resume_config(config, overrides, force)
    group = distributed.join(new_config.train.distribute, new_config.train.batch_size)
    longer = "train.epochs" in changed and new_config.train.epochs > int(meta.get("epochs") or 0)
    if meta.get("status") == "complete" and not longer:
        raise RunError(
            f"run {run.path} is complete; nothing to resume "
            f"(to train it longer: --force train.epochs=N with N > {meta.get('epochs')})"
        )
    if new_config.train.tensorboard:
        env.require("tensorboard", "train.tensorboard=true", "tensorboard")
    data = load_dataset(new_config.data, new_config.seed, new_config.train.calibrate)
    if list(data.class_names) != meta.get("classes"):
        raise ConfigError(f"the data's classes {list(data.class_names)} differ from the run's")
    _require_resources(new_config, data, meta["precision"], run.path)
    if not group.primary:
        _run(new_config, data, run, meta["precision"], verbose, True, callbacks, group)
        return run
    with lock_run(run):
        start = (
            "from its last checkpoint"
            if run.state_path.is_file()
            else "from the start (no checkpoint)"
        )
        if new_config != config:
            run.write_config(new_config)
        resumes = [
            *meta.get("resumes", []),
            {"at": now(), "argv": list(sys.argv), "changes": changed,
             "previous_status": meta.get("status"), "previous_error": meta.get("error"),
             "distributed": distributed.describe(group) if group.distributed else None},
        ]  # fmt: skip
        run.update_meta(status="running", error=None, resumes=resumes)
        log.info("resuming %s %s", run.path, start)
        _run(new_config, data, run, meta["precision"], verbose, True, callbacks, group)
    return run


def _require_resources(config: Config, data: Any, policy: str, folder: Path) -> None:
    """Refuse, before anything is written, a run that the machine's memory or disk cannot hold
    (:mod:`cnnkit.resources`); throwaway builds of the network at small sizes tell its size."""
    from cnnkit import env
    from cnnkit.models import create_model
    from cnnkit.resources import (
        checkpoint_bytes,
        network_size,
        require_free_space,
        require_training_memory,
    )

    keras = env.import_keras()
    keras.mixed_precision.set_global_policy(policy)
    weights = "none" if config.model.weights in ("auto", "imagenet") else config.model.weights

    def build(shape: tuple[int, int, int]) -> Any:
        return create_model(config.model.name, shape, data.num_classes, weights,
                            **config.model.params)  # fmt: skip

    try:
        size = network_size(build, data.input_shape)
    finally:
        keras.backend.clear_session()  # names and graphs as if it had never been built
    require_training_memory(size, data.input_shape, config)
    height, width = data.input_shape[:2]
    require_free_space(folder, checkpoint_bytes(size, height * width))


def _run(
    config: Config,
    data: Any,
    run: Run,
    policy: str,
    verbose: int | None,
    resume: bool,
    callbacks: list[Any] | None,
    group: Group,
) -> None:
    """Seed, build, fit (or continue), then evaluate and report; record the outcome in run.json
    (process 0 of a distributed run; the others only train)."""
    from cnnkit import env
    from cnnkit.budget import few_steps_warning

    keras = env.import_keras()
    env.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(policy)
    if config.train.deterministic:
        env.enable_determinism()
    held = f", {len(data.held_out)} calibration" if data.held_out is not None else ""
    log.info(
        "%s: %d train, %d validation%s, %d test images %s from %s",
        data.name, len(data.train), len(data.val) if data.val else 0, held, len(data.test),
        data.input_shape, data.source,
    )  # fmt: skip
    log.info("model %s, precision %s, backend %s, run %s",
             config.model.name, policy, env.backend_name(), run.path)  # fmt: skip
    if group.distributed:
        log.info("data parallel: %d process(es), %d device(s), global batch %d (%d per device)",
                 group.num_processes, group.devices, config.train.batch_size,
                 config.train.batch_size // group.devices)  # fmt: skip
    if not group.primary:  # the others train, and leave the writing and evaluating to process 0
        _fit_and_evaluate(config, data, run, verbose, resume, callbacks, group)
        return
    if warning := few_steps_warning(len(data.train), config.train.batch_size, config.train.epochs):
        log.warning(warning)
    try:
        result = _fit_and_evaluate(config, data, run, verbose, resume, callbacks, group)
        assert result is not None
    except TrainingInterrupted:
        run.update_meta(status="interrupted", ended=now())
        raise
    except RunStopped as stop:  # a callback ended the run at a committed epoch (a pruned trial)
        run.update_meta(status=stop.status, ended=now(), **stop.details)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, the last one stands
        run.update_meta(status="interrupted", ended=now())
        raise TrainingInterrupted(
            f"interrupted; resume from the last checkpoint with: cnnkit train --resume {run.path}"
        ) from None
    except BaseException as exc:
        try:
            run.update_meta(
                status="failed", ended=now(), error=f"{type(exc).__name__}: {exc}"[:500]
            )
        except OSError as record:  # a full disk: the error that stopped training is what counts
            log.warning("could not record the failure in %s (%s)", run.path, record.strerror)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunError(
                f"the disk of {run.path} is full ({exc.filename or 'writing the run'}); free some "
                f"space, then continue with: cnnkit train --resume {run.path}"
            ) from None
        raise
    log.info("test accuracy %.4f, test loss %.4f (%d images)",
             result.accuracy, result.loss, result.num_images)  # fmt: skip


def _fit_and_evaluate(
    config: Config,
    data: Any,
    run: Run,
    verbose: int | None,
    resume: bool,
    callbacks: list[Any] | None,
    group: Group,
) -> EvalResult | None:
    from cnnkit import trainer
    from cnnkit.atomic import remove_stale
    from cnnkit.metrics import classification_report, score
    from cnnkit.models import create_model
    from cnnkit.predictor import evaluate_model
    from cnnkit.reporter import write_report

    group.start()  # the network's variables on every device of the group
    net = create_model(
        config.model.name, data.input_shape, data.num_classes, config.model.weights,
        **config.model.params,
    )  # fmt: skip
    if group.primary:
        lines: list[str] = []
        net.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        run.write_summary(lines)
        run.checkpoints.mkdir(exist_ok=True)
        remove_stale(run.checkpoints)
        remove_stale(run.path)

    fitted = trainer.fit(
        net, data.train, data.val, data.num_classes, config.train, run, config.seed,
        config.augment, verbose, resume, callbacks, group,
    )  # fmt: skip
    group.finish()  # evaluation and the report: once, in process 0, on its own devices
    if not group.primary:
        return None
    kept = run.keep_model(config.train.keep)
    if kept != config.train.keep:
        log.info("no validation split, so the last epoch's weights are kept")

    model = run.load_model()  # evaluate what was saved, not what is in memory
    # The network as saved; _calibrate gives model.keras the calibration as its last layer.
    calibrated, held_out = _calibrate(config, data, run, model)
    record = None if calibrated is None else calibrated.to_dict()
    result, probabilities = evaluate_model(
        model, data.test, list(data.class_names), config.train.eval_batch_size, config.train.tta
    )
    raw = None
    if calibrated is not None:  # that layer's formula on the same predictions (equal to the
        # saved model's: tests/test_calibration.py)
        raw, raw_result = probabilities, result
        probabilities = calibrated.apply(raw)
        result = score(probabilities, data.test, list(data.class_names), raw_result.seconds)
        log.info(
            "calibrated, on the test set: accuracy %.4f -> %.4f, NLL %.4f -> %.4f, "
            "ECE %.2f %% -> %.2f %%, Brier %.4f -> %.4f", raw_result.accuracy, result.accuracy,
            raw_result.loss, result.loss, 100 * raw_result.ece, 100 * result.ece,
            raw_result.brier, result.brier,
        )  # fmt: skip
    run.write_predictions(probabilities, data.test.y, raw, held_out)
    run.write_metrics(result.scores(), kept, None if raw is None else raw_result.scores(), record)
    run.write_classification_report(classification_report(result))
    speeds = fitted.history.get("train_images_per_second") or [0.0]
    run.update_meta(
        status="complete",
        ended=now(),
        epochs=fitted.epochs,
        stopped_early=fitted.stopped_early,
        best_epoch=fitted.best_epoch,
        kept=kept,
        train_seconds=round(fitted.seconds, 1),
        train_images_per_second=statistics.median(speeds),  # median over epochs
        eval_seconds=result.seconds,
        test_accuracy=result.accuracy,
        test_loss=result.loss,
        calibration=record,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if not config.report.enabled:
        return result
    try:
        written = write_report(
            run, result, probabilities, data.test.y, data.test.x, model, uncalibrated=raw
        )
        log.info("report %s (%.1f s)", written.path, written.seconds)
    except Exception as exc:  # the model and its metrics are saved; the page can be redrawn
        log.warning(
            "the report could not be written (%s: %s); try `cnnkit report %s --debug`",
            type(exc).__name__, exc, run.path,
        )  # fmt: skip
    return result


def _calibrate(
    config: Config, data: Any, run: Run, model: Any
) -> tuple[Fitted | None, tuple[Any, Any] | None]:
    """Fit the calibration on the held-out images (``train.calibrate``; a temperature, or
    vector scaling where it does better, :func:`cnnkit.calibration.calibrate`) and make it the
    last layer of the run's model.keras; return it, and the held-out probabilities and labels it
    was fitted on (before calibration). ``model`` (the network as saved) is left as it is."""
    import time

    from cnnkit.calibration import calibrate
    from cnnkit.models.calibration import with_calibration
    from cnnkit.predictor import predict_probabilities
    from cnnkit.runs import save_network

    if not config.train.calibrate:
        return None, None
    held = data.calibration
    if held is None:
        log.warning(
            "no held-out images to calibrate on (data.val_split and data.calibration_split "
            "are 0, or the dataset is too small): the probabilities are the network's own"
        )
        return None, None
    start = time.perf_counter()
    probabilities = predict_probabilities(
        model, held.x, config.train.eval_batch_size, config.train.tta
    )
    source = "validation split" if data.val is not None else "calibration split"
    fitted = calibrate(probabilities, held.y, source)
    save_network(with_calibration(model, fitted.scale, fitted.bias), run.model_path)
    how = (
        f"vector scaling (it beat the temperature {fitted.temperature:.4f} on held-out folds)"
        if fitted.method == "vector" else f"temperature {fitted.temperature:.4f}"
    )  # fmt: skip
    log.info(
        "calibrated on the %d images of the %s: %s; their NLL %.4f -> %.4f (%.1f s)",
        fitted.images, source, how, fitted.nll_before, fitted.nll_after,
        time.perf_counter() - start,
    )  # fmt: skip
    return fitted, (probabilities, held.y)


def evaluate(
    run: Run | str | Path,
    overrides: Iterable[str] = (),
    batch_size: int | None = None,
    errors: str | Path | None = None,
) -> EvalResult:
    """Evaluate ``run``'s model on its test split again, with the run's test-time augmentation
    (``data.*`` overrides say where the data is on this machine, e.g. ``data.path``).

    ``errors``: a new CSV file to list every wrong prediction in, most confident first (index,
    file where the data has file names, true class, prediction, both probabilities); an
    existing file is never overwritten.
    """
    from cnnkit.config import with_data_overrides
    from cnnkit.data import load_dataset
    from cnnkit.predictor import evaluate_model

    if errors is not None and Path(errors).exists():
        raise ConfigError(f"{errors} exists; give --errors a new file name")
    run = open_run(run)
    config = with_data_overrides(run.config(), overrides, "evaluate")
    data = load_dataset(config.data, config.seed)
    if list(data.class_names) != run.class_names:
        raise ConfigError(
            f"the dataset's classes {list(data.class_names)} differ from the run's {run.class_names}"
        )
    model = run.load_model()
    result, probabilities = evaluate_model(
        model, data.test, run.class_names, batch_size or config.train.eval_batch_size,
        config.train.tta,
    )  # fmt: skip
    if errors is not None:
        _write_mistakes(Path(errors), probabilities, data.test, run.class_names)
    return result


def _write_mistakes(path: Path, probabilities: Any, test: Any, names: list[str]) -> None:
    import csv
    import io

    from cnnkit.analysis import mistakes
    from cnnkit.atomic import write_text

    files = None if test.files is None else list(test.files)
    rows = mistakes(probabilities, test.y, names, files)
    columns = ["index", *(["file"] if files is not None else []), "true", "predicted",
               "confidence", "true_probability"]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())
    log.info("%d mistakes of %d test images listed in %s", len(rows), len(test.y), path)
