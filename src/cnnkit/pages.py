"""The HTML pages cnnkit writes: the report page of a run and the comparison page of several.

Presentation only: a page is built from numbers and picture files made elsewhere (reporter.py,
comparison.py, figures.py). Pages are self-contained: every picture is embedded, no script runs,
nothing is fetched, so a page opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnkit.metrics import EvalResult

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c7cdd9}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #e2e5ea;font-size:14px}
nav a{margin-right:14px;color:#2456b3;text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:12px 20px;margin:18px 0}
h2{font-size:18px;margin:6px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e2e5ea;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#5b6475;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} .row img{max-width:560px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eceef2;text-align:right}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left}
pre{background:#f0f2f5;padding:10px;border-radius:6px;overflow:auto;font-size:12px}
.note{color:#8a5300;background:#fff6e5;border:1px solid #f2d9a6;border-radius:6px;padding:6px 10px;margin:6px 0}
details summary{cursor:pointer;color:#2456b3}
"""


def embed_png(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_rows(value: dict[str, Any]) -> list[tuple[str, str]]:
    """A nested record as (dotted key, value as text) rows; lists as JSON."""
    from cnnkit.config import flatten

    return [
        (k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in flatten(value).items()
    ]


def report_page(
    run_path: Path,
    meta: dict[str, Any],
    result: EvalResult,
    figures: dict[str, Path],
    numbers: dict[str, Any],
    notes: list[str],
    config_text: str,
    env: dict[str, Any],
    cams: int,
) -> str:
    """The report page: every figure embedded, the numbers beside them, the config and the
    environment. ``cams``: how many right (and wrong) images the Grad-CAM figure shows."""
    esc = html.escape
    name = meta.get("name", run_path.name)
    dataset = meta.get("dataset") or {}
    calibration = numbers.get("calibration") or {}
    cards = [
        (f"{result.accuracy:.2%}", "test accuracy"),
        (f"{result.loss:.4f}", "test loss"),
        (f"{result.macro_f1:.3f}", "macro F1"),
        (f"{calibration['ece']:.2%}" if calibration else "n/a", "calibration error (ECE)"),
        (str(result.num_images), "test images"),
        (str(meta.get("epochs", "?")), "epochs"),
        (f"{meta.get('train_seconds', 0):.0f} s", "training time"),
        (f"{meta.get('train_images_per_second', 0):.0f}", "training images/s"),
    ]
    sections = []

    def section(anchor: str, title: str, body: str) -> None:
        sections.append(
            (anchor, title, f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>')
        )

    section("summary", "Summary", '<div class="cards">' + "".join(
        f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in cards
    ) + "</div>" + "".join(f'<p class="note">{esc(n)}</p>' for n in notes))  # fmt: skip

    curves = ""
    if "accuracy" in figures:
        marks = []
        if numbers.get("best_epoch"):
            marks.append(f"the kept (best) checkpoint is from epoch {numbers['best_epoch']}")
        if numbers.get("overfitting_epoch"):
            marks.append(
                f"over-fitting starts at epoch {numbers['overfitting_epoch']}: validation loss "
                f"was lowest the epoch before and training loss went on falling"
            )
        curves = (f"<p>{esc('; '.join(marks).capitalize())}.</p>" if marks else "") + (
            f'<div class="row">{embed_png(figures.get("accuracy"), "accuracy per epoch")}'
            f"{embed_png(figures.get('loss'), 'loss per epoch')}</div>"
        )
        section("curves", "Training curves", curves)

    per_class_rows = [
        (r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"])
        for r in result.per_class()
    ]
    section("classes", "Per-class precision, recall and F1",
            embed_png(figures.get("per_class"), "per-class scores")
            + "<details><summary>the table</summary>"
            + html_table(("class", "precision", "recall", "F1", "images"), per_class_rows)
            + "</details>")  # fmt: skip
    section("confusion", "Confusion matrix",
            f'<div class="row">{embed_png(figures.get("confusion"), "confusion matrix, counts")}'
            f'{embed_png(figures.get("confusion_normalized"), "confusion matrix, row-normalised")}</div>')  # fmt: skip
    pair_rows = [(p["true"], p["predicted"], p["count"], f"{p['share_of_true']:.1%}")
                 for p in numbers.get("confused_pairs", [])]  # fmt: skip
    section("pairs", "Most confused class pairs",
            html_table(("true class", "predicted as", "images", "share of true class"), pair_rows)
            + embed_png(figures.get("pairs"), "examples of the most confused pairs"))  # fmt: skip
    if "wrong" in figures:
        section(
            "mistakes",
            "Most confident mistakes",
            embed_png(figures["wrong"], "most confident mistakes")
            + _mistakes_table(numbers.get("mistakes", [])),
        )
    if "sample" in figures:
        section(
            "sample",
            "Random test predictions",
            embed_png(figures["sample"], "random test predictions"),
        )
    if "reliability" in figures:
        section("calibration", "Calibration",
                _calibration_text(meta.get("calibration"), numbers, result)
                + f"<p>Expected calibration error {calibration['ece']:.2%} over "
                f"{len(calibration['count'])} equal-width confidence bins: how far the model's "
                f"confidence is from its accuracy, weighted by the images in each bin. "
                f"{_leaning(calibration['overconfidence'])}</p>"
                + embed_png(figures["reliability"], "reliability diagram"))  # fmt: skip
    if "coverage" in figures:
        section("coverage", "Accuracy against coverage",
                _coverage_text(numbers.get("operating_points") or [], result)
                + embed_png(figures["coverage"], "accuracy against coverage"))  # fmt: skip
    if "gradcam" in figures:
        section("gradcam", "Class-activation maps (Grad-CAM)",
                f"<p>Top row: {cams} correctly and {cams} wrongly classified test "
                f"images; bottom row: where the evidence for the predicted class lies, from layer "
                f"<code>{esc(numbers['gradcam']['layer'])}</code>.</p>"
                + embed_png(figures["gradcam"], "class-activation maps"))  # fmt: skip
    run_rows = key_value_rows({k: meta[k] for k in (
        "status", "created", "ended", "model", "precision", "backend", "kept", "best_epoch",
        "stopped_early", "train_seconds", "eval_seconds", "peak_rss_mb") if k in meta})  # fmt: skip
    section("config", "Configuration and environment",
            f"<h3>config.yaml</h3><pre>{esc(config_text)}</pre>"
            + "<h3>run</h3>" + html_table(("key", "value"), run_rows)
            + "<h3>environment</h3>" + html_table(("key", "value"), key_value_rows(env)))  # fmt: skip

    nav = "".join(f'<a href="#{a}">{esc(t.split(" (")[0])}</a>' for a, t, _ in sections)
    subtitle = (f"{meta.get('model', '?')} on {dataset.get('name', '?')} "
                f"({len(result.class_names)} classes), run folder {run_path}")  # fmt: skip
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>cnnkit report: {esc(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>cnnkit report: {esc(name)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body for _, _, body in sections)}</main></body></html>\n"
    )


def _calibration_text(
    fitted: dict[str, Any] | None, numbers: dict[str, Any], result: EvalResult
) -> str:
    """What the calibration is, where it came from, and the numbers before and after it."""
    from cnnkit.calibration import FOLDS

    if not fitted:
        return (
            "<p>The probabilities are the network's own (not calibrated: train.calibrate=false, "
            "or no held-out images to calibrate on).</p>"
        )
    where = (
        f"fitted by minimising the negative log-likelihood on the {fitted['images']:,} images "
        f"of the {html.escape(str(fitted['source']))}, which training never fitted (there: "
        f"{fitted['nll_before']:.4f} before, {fitted['nll_after']:.4f} after)"
    )
    t = fitted["temperature"]
    if fitted.get("method", "temperature") == "temperature":
        how = (
            f"the logits are divided by the temperature <b>T = {t:.4f}</b> (the saved model's "
            f"last layer), {where}. T {'below' if t < 1 else 'above'} 1 makes the model "
            f"{'surer' if t < 1 else 'less sure'}; no prediction changes."
        )
    else:
        how = (
            f"each class's logit is scaled and shifted (vector scaling, the saved model's last "
            f"layer), {where}. It was kept because it beat a single temperature (T = {t:.4f}) "
            f"on held-out folds of those images; unlike a temperature it can change "
            f"predictions (accuracy before and after below)."
        )
    folds = fitted.get("folds")
    if folds:
        how += (
            f" Negative log-likelihood on held-out folds ({FOLDS}-fold): temperature "
            f"{folds['temperature']:.4f}, vector scaling {folds['vector']:.4f}."
        )
    text = (
        "<p>The probabilities in this report, and those <code>predict</code>, <code>serve</code> "
        f"and <code>export</code> give, are calibrated: {how}</p>"
    )
    before = numbers.get("uncalibrated")
    if before:
        rows = [
            ("network's own", f"{before['accuracy']:.2%}", f"{before['loss']:.4f}",
             f"{before['ece']:.2%}", f"{before['brier']:.4f}"),
            ("calibrated", f"{result.accuracy:.2%}", f"{result.loss:.4f}",
             f"{result.ece:.2%}", f"{result.brier:.4f}"),
        ]  # fmt: skip
        text += html_table(
            ("test set", "accuracy", "negative log-likelihood", "ECE", "Brier score"), rows
        )
    return text


def _coverage_text(points: list[dict[str, Any]], result: EvalResult) -> str:
    intro = (
        f"<p>Answering only when the model is sure enough, and saying \u201cunsure\u201d "
        f"otherwise (<code>cnnkit predict --min-confidence P</code>, the service's "
        f"<code>min_confidence</code>), trades coverage for accuracy: all {result.num_images:,} "
        f"test images are {result.accuracy:.2%} right. The thresholds below are read off this "
        f"test set.</p>"
    )
    rows = [
        (f"{p['target']:.0%}", f"{p['threshold']:.4f}", f"{p['coverage']:.1%}",
         f"{p['accuracy']:.2%}") for p in points
    ]  # fmt: skip
    if not rows:
        return intro
    return intro + html_table(
        ("accuracy wanted", "answer when confidence \u2265 P", "share answered",
         "accuracy on them"), rows,
    )  # fmt: skip


def _leaning(overconfidence: float) -> str:
    points = abs(overconfidence) * 100
    if points < 1:
        return "On average its confidence matches its accuracy (within 1 point)."
    if overconfidence > 0:
        return f"The model is over-confident: its mean confidence is {points:.1f} points above its accuracy."
    return (
        f"The model is under-confident: its accuracy is {points:.1f} points above its mean "
        f"confidence (label smoothing, for one, trains a model to be so)."
    )


def compare_page(
    labels: Sequence[str],
    paths: Sequence[Path],
    metrics: tuple[Sequence[str], Sequence[Sequence[str]]],
    differences: Sequence[Sequence[str]],
    figures: dict[str, Path],
) -> str:
    """The comparison page: the runs' final numbers (a header and rows of cells), their curves
    per epoch and against time, and the config keys in which they differ (key, then a cell per
    run)."""
    esc = html.escape
    paths_list = "".join(
        f"<li>{esc(label)}: {esc(str(path))}</li>"
        for label, path in zip(labels, paths, strict=True)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>cnnkit compare: {esc(', '.join(labels))}</title><style>{STYLE}</style>"
        f"</head><body><header><h1>cnnkit compare</h1><p>{esc(' vs '.join(labels))}</p>"
        f"</header><main><section><h2>Final numbers</h2>{html_table(*metrics)}<ul>{paths_list}</ul></section>"
        f"<section><h2>Curves per epoch</h2>{embed_png(figures['by_epoch'], 'curves per epoch')}</section>"
        f"<section><h2>Curves against training time</h2>{embed_png(figures['by_time'], 'curves against time')}</section>"
        f"<section><h2>Config differences</h2>{html_table(['config key', *labels], differences)}</section></main></body></html>\n"
    )


def study_page(
    name: str,
    subtitle: str,
    cards: Sequence[tuple[str, str]],
    best: tuple[str, str, str] | None,
    figures: dict[str, Path | None],
    importance_note: str,
    side_by_side: tuple[Sequence[str], Sequence[Sequence[Any]]],
    trials: tuple[Sequence[str], Sequence[Sequence[Any]]],
    space: Sequence[tuple[str, str]],
) -> str:
    """A tuning study's page: counts of trials by state (value, label), the best trial (what,
    run folder, best.yaml), the optimisation history and parameter importances, the best trials
    side by side, every trial, and the search space."""
    esc = html.escape
    card_html = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
                        for v, k in cards)  # fmt: skip
    if best is None:
        best_html = '<p class="note">No trial is complete yet.</p>'
    else:
        what, run, config = best
        best_html = (
            f"<p><b>{esc(what)}</b></p><ul><li>run folder: {esc(run)}</li>"
            f"<li>its settings: {esc(config)} (train it: <code>cnnkit train --config "
            f"{esc(config)}</code>)</li></ul>"
        )
    importances = (
        embed_png(figures["importances"], "parameter importances")
        if figures.get("importances")
        else f'<p class="note">{esc(importance_note)}</p>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>cnnkit tune: {esc(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>cnnkit tune: {esc(name)}</h1><p>{esc(subtitle)}</p></header>"
        '<nav><a href="#best">Best</a><a href="#history">History</a>'
        '<a href="#importances">Importances</a><a href="#side">Best trials</a>'
        '<a href="#trials">All trials</a><a href="#space">Space</a></nav><main>'
        f'<section><h2>Trials</h2><div class="cards">{card_html}</div></section>'
        f'<section id="best"><h2>Best trial</h2>{best_html}</section>'
        f'<section id="history"><h2>Optimisation history</h2>'
        f"{embed_png(figures['history'], 'optimisation history')}</section>"
        f'<section id="importances"><h2>Parameter importances</h2>{importances}</section>'
        f'<section id="side"><h2>The best trials side by side</h2>{html_table(*side_by_side)}</section>'
        f'<section id="trials"><h2>All trials</h2>{html_table(*trials)}</section>'
        f'<section id="space"><h2>Search space</h2>{html_table(["key", "values"], space)}</section>'
        "</main></body></html>\n"
    )


def _mistakes_table(mistakes: list[dict[str, Any]]) -> str:
    """The gallery's mistakes by file name (for data read from files), in the gallery's order."""
    if not mistakes:
        return ""
    rows = [(m["file"], m["true"], m["predicted"], f"{m['confidence']:.1%}") for m in mistakes]
    return "<p>The same images by file (all mistakes: <code>cnnkit evaluate RUN --errors " \
        "mistakes.csv</code>):</p>" + html_table(("file", "true class", "predicted as",
                                                   "probability"), rows)  # fmt: skip
