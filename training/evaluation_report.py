"""The evaluation report: how the best weights do on the test split, per class and in calibration, with figures.

train.py writes it at the end of training into <output-dir>/evaluation/:

    report.json               accuracy, expected calibration error and its bins, per-class accuracy, the ten worst
                              classes, the confusion matrix (rows: true class, columns: predicted), the counts, and
                              the misclassified images the grid shows
    confusion_matrix.png      numbers in the cells up to 30 classes; above, a heatmap of each true class's shares
    per_class_accuracy.png    the ten worst classes, and every class's accuracy in order
    reliability_diagram.png   accuracy per confidence bin against the diagonal, with the ECE
    misclassified.png         the most confident mistakes (at most 16), as the model saw them, true and predicted
                              class and confidence as titles

The numbers are the model's own outputs on the test images through the eval transform (the preprocessing serving
uses): `Trainer.predict`, each rank's shard gathered on rank 0, which alone writes. metrics.json gets a summary
under "evaluation".
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import preprocessing
from training.figures import matplotlib_agg, write_png
from training.imagefolder_data import load_image

log = logging.getLogger("train")

REPORT_DIR = "evaluation"
SPLIT = "test"
CALIBRATION_BINS = 15
WORST_COUNT = 10
MISCLASSIFIED_SHOWN = 16
MISCLASSIFIED_COLUMNS = 4
TILE, GAP, TITLE_BAND, HEADER = 224, 16, 36, 40     # the misclassified grid, in pixels
CELL_TEXT_MAX_CLASSES = 30    # above: no numbers in the cells nor class names on the axes, or nothing is readable
DPI = 100


@dataclass
class Predictions:
    """The model's class probabilities for the images of one split, in the split's order."""

    probabilities: np.ndarray    # (images, classes)
    labels: np.ndarray           # true class of each image
    indices: np.ndarray          # each image's index in the split's samples (unreadable images are left out)

    @property
    def predicted(self):
        return self.probabilities.argmax(axis=1)

    @property
    def confidences(self):
        return self.probabilities.max(axis=1)

    @property
    def correct(self):
        return self.predicted == self.labels


def predict_test_split(trainer, data, env):
    """The test split's Predictions of the trainer's model, every rank's shard (Trainer.predict) joined in split
    order on rank 0; None on the other ranks, and without a test split. Every rank must call it.

    Every rank predicts with rank 0's weights, the ones model.pth holds (its batch-norm statistics included)."""
    if SPLIT not in data.splits:
        if env.is_main:
            log.info("no evaluation report: %s has no %s/ split", data.root, SPLIT)
        return None
    env.broadcast_buffers(trainer.model)
    return gather_predictions(env, trainer.predict(SPLIT))


def gather_predictions(env, shard):
    """Every rank's (logits, labels, indices) shard joined in split order on rank 0 (None on the other ranks)."""
    shards = [part for part in env.gather(tuple(shard)) if len(part[1])]
    if not env.is_main:
        return None
    if not shards:
        log.warning("no evaluation report: no %s image could be read", SPLIT)
        return None
    logits, labels, indices = (torch.cat([part[i] for part in shards]) for i in range(3))
    order = indices.argsort()
    return Predictions(probabilities=logits[order].float().softmax(dim=1).numpy(),
                       labels=labels[order].numpy(), indices=indices[order].numpy())


# --- the numbers --------------------------------------------------------------------------------------------------

def confusion_matrix(labels, predicted, num_classes):
    """Counts of (true class, predicted class): row i, column j is how many images of class i were predicted j."""
    pairs = np.asarray(labels) * num_classes + np.asarray(predicted)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix):
    """Each class's share of its test images predicted right (NaN for a class without test images)."""
    images = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(images > 0, np.diag(matrix) / images, np.nan)


def worst_classes(accuracy, count=WORST_COUNT):
    """Indices of the `count` classes with the lowest accuracy, lowest first (ties in class order); classes without
    test images are left out."""
    evaluated = np.flatnonzero(~np.isnan(accuracy))
    return evaluated[np.argsort(accuracy[evaluated], kind="stable")][:count]


def calibration(confidences, correct, bins=CALIBRATION_BINS):
    """The reliability diagram's bins and the expected calibration error.

    Bin b holds the images whose confidence (top probability) is in (b / bins, (b + 1) / bins]; the ECE is the
    mean over images of |accuracy - mean confidence| of their bin: sum_b (n_b / N) |acc_b - conf_b|.
    """
    confidences, correct = np.asarray(confidences, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
        confidence = np.bincount(which, weights=confidences, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - confidence), 0.0)
    ece = float((counts * gaps).sum() / max(len(confidences), 1))
    rows = [{"lower": float(edges[b]), "upper": float(edges[b + 1]), "images": int(counts[b]),
             "accuracy": _number(accuracy[b]), "confidence": _number(confidence[b])} for b in range(bins)]
    return rows, ece


def misclassified(predictions, limit=MISCLASSIFIED_SHOWN):
    """Positions (in `predictions`) of at most `limit` wrongly predicted images, the most confident first."""
    wrong = np.flatnonzero(~predictions.correct)
    order = np.argsort(-predictions.confidences[wrong], kind="stable")
    return wrong[order][:limit]


def _number(value):
    return None if np.isnan(value) else round(float(value), 6)


def summarize(predictions, class_names, samples, data_root):
    """report.json's content (plain numbers and names) for `predictions` of the split whose `samples` they index."""
    matrix = confusion_matrix(predictions.labels, predictions.predicted, len(class_names))
    accuracy = per_class_accuracy(matrix)
    bins, ece = calibration(predictions.confidences, predictions.correct)
    per_class = [{"class": name, "images": int(matrix[i].sum()), "correct": int(matrix[i, i]),
                  "accuracy": _number(accuracy[i])} for i, name in enumerate(class_names)]
    shown = [{"image": _relative(samples[predictions.indices[p]][0], data_root),
              "true": class_names[predictions.labels[p]], "predicted": class_names[predictions.predicted[p]],
              "confidence": round(float(predictions.confidences[p]), 6)} for p in misclassified(predictions)]
    return {"split": SPLIT, "images": int(len(predictions.labels)), "unreadable_images": len(samples) - len(
                predictions.labels),
            "correct": int(predictions.correct.sum()), "accuracy": round(float(predictions.correct.mean()), 6),
            "expected_calibration_error": round(ece, 6), "calibration_bins": bins, "class_names": list(class_names),
            "per_class": per_class, "worst_classes": [per_class[i] for i in worst_classes(accuracy)],
            "confusion_matrix": matrix.tolist(), "misclassified": int((~predictions.correct).sum()),
            "misclassified_shown": shown}


def _relative(path, root):
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# --- the figures --------------------------------------------------------------------------------------------------

def confusion_figure(matrix, class_names):
    """Rows true, columns predicted, coloured by each true class's share (so small classes show as much)."""
    Figure, _ = matplotlib_agg()
    count = len(class_names)
    side = 5.5 if count <= CELL_TEXT_MAX_CLASSES // 3 else 9.0
    figure = Figure(figsize=(side + 1.5, side), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    images = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    shown = axes.imshow(matrix / images, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(shown, ax=axes, shrink=0.8, label="share of the true class's images")
    axes.set(title=f"confusion matrix: {int(matrix.sum())} test images", xlabel="predicted", ylabel="true")
    if count <= CELL_TEXT_MAX_CLASSES:
        axes.set_xticks(range(count), class_names, rotation=90, fontsize=7 if count > 10 else 9)
        axes.set_yticks(range(count), class_names, fontsize=7 if count > 10 else 9)
        for (row, column), value in np.ndenumerate(matrix):
            if value:
                axes.text(column, row, str(value), ha="center", va="center", fontsize=6 if count > 10 else 9,
                          color="white" if value / images[row, 0] > 0.5 else "black")
    else:   # class numbers (1 = the first folder of train/); report.json names them
        ticks = range(0, count, 10)
        axes.set_xticks(ticks, [str(t + 1) for t in ticks])
        axes.set_yticks(ticks, [str(t + 1) for t in ticks])
        axes.set(xlabel="predicted class number", ylabel="true class number")
    return figure


def per_class_figure(matrix, class_names, overall):
    """The ten worst classes by name (with correct / images), and every class's accuracy in increasing order."""
    Figure, _ = matplotlib_agg()
    figure = Figure(figsize=(11, 4), dpi=DPI)
    figure.subplots_adjust(left=0.2, right=0.98, bottom=0.12, top=0.92, wspace=0.25)
    worst_axes, all_axes = figure.subplots(1, 2, width_ratios=(1, 1.3))
    accuracy = per_class_accuracy(matrix)
    worst = worst_classes(accuracy)
    bars = worst_axes.barh(range(len(worst)), accuracy[worst], color="tab:red")
    worst_axes.bar_label(bars, [f"{matrix[i, i]}/{matrix[i].sum()}" for i in worst], padding=3, fontsize=8)
    worst_axes.set_yticks(range(len(worst)), [class_names[i] for i in worst], fontsize=8)
    worst_axes.invert_yaxis()
    worst_axes.set(title=f"the {len(worst)} worst classes", xlabel="test accuracy", xlim=(0, 1))
    worst_axes.axvline(overall, color="black", linestyle="--")
    ordered = np.sort(accuracy[~np.isnan(accuracy)])
    all_axes.bar(range(len(ordered)), ordered, width=1.0, color="tab:blue")
    all_axes.axhline(overall, color="black", linestyle="--", label=f"overall {overall:.3f}")
    for axes in (worst_axes, all_axes):
        axes.grid(alpha=0.3)
    all_axes.set(title=f"all {len(ordered)} classes, in order", xlabel="classes, worst to best",
                 ylabel="test accuracy", xticks=[], ylim=(0, 1))
    all_axes.legend(loc="upper left")
    return figure


def reliability_figure(bins, ece):
    """Accuracy against mean confidence per bin (a calibrated model sits on the diagonal), and the bins' counts."""
    Figure, _ = matplotlib_agg()
    figure = Figure(figsize=(5.5, 6), dpi=DPI)
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.09, top=0.94, hspace=0.08)
    diagram, histogram = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    lower = np.array([b["lower"] for b in bins])
    width = bins[0]["upper"] - bins[0]["lower"]
    accuracy = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    confidence = np.array([b["confidence"] if b["confidence"] is not None else 0.0 for b in bins])
    diagram.bar(lower, accuracy, width=width, align="edge", edgecolor="black", label="accuracy")
    diagram.bar(lower, np.abs(confidence - accuracy), bottom=np.minimum(confidence, accuracy), width=width,
                align="edge", fill=False, hatch="//", edgecolor="tab:red", label="gap to the mean confidence")
    diagram.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    diagram.set(title=f"reliability diagram: ECE {ece:.3f}", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    diagram.legend(loc="upper left")
    histogram.bar(lower, [b["images"] for b in bins], width=width, align="edge", edgecolor="black")
    histogram.set(xlabel="confidence (top probability)", ylabel="images")
    return figure


def misclassified_figure(pictures, titles):
    """A grid of `pictures` (PIL images of TILE pixels) with their `titles` above them; a note when there are none.

    The pictures are one mosaic of pixels on the figure (figimage), not one Axes each: Axes and compositing cost
    most of the drawing time."""
    Figure, _ = matplotlib_agg()
    columns = min(MISCLASSIFIED_COLUMNS, max(1, len(pictures)))
    rows = max(1, -(-len(pictures) // columns))
    width, height = columns * (TILE + GAP) + GAP, HEADER + rows * (TITLE_BAND + TILE) + GAP
    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for position, (picture, title) in enumerate(zip(pictures, titles)):
        row, column = divmod(position, columns)
        left, top = GAP + column * (TILE + GAP), HEADER + row * (TITLE_BAND + TILE) + TITLE_BAND
        mosaic[top:top + TILE, left:left + TILE] = np.asarray(picture)
        figure.text((left + TILE / 2) / width, 1 - (top - 4) / height, title, ha="center", va="bottom", fontsize=8)
    figure.figimage(mosaic, origin="upper")
    figure.text(0.5, 1 - 8 / height, "misclassified test images, most confident first" if pictures else
                "no misclassified test image", ha="center", va="top", fontsize=12)
    return figure


def misclassified_pictures(report, data_root, image_size):
    """The shown images as the model saw them (the eval resize and center crop), scaled to TILE pixels (small ones
    by repeating pixels), and their titles."""
    geometry = preprocessing.eval_geometry(image_size)
    pictures, titles = [], []
    for entry in report["misclassified_shown"]:
        picture = load_image(Path(data_root) / entry["image"], preprocessing.decode_side(image_size))
        for step in geometry:
            picture = step(picture)
        resample = Image.NEAREST if picture.width < TILE else Image.BILINEAR
        pictures.append(picture.resize((TILE, TILE), resample))
        titles.append(f"true: {entry['true']}\npredicted: {entry['predicted']} ({entry['confidence']:.0%})")
    return pictures, titles


# --- the files ----------------------------------------------------------------------------------------------------

def write_evaluation_report(output_dir, predictions, data, image_size):
    """Write report.json and the figures of the test split's `predictions` into <output_dir>/evaluation/; returns
    the summary metrics.json keeps under "evaluation"."""
    folder = Path(output_dir) / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    class_names, data_root = data.class_names, data.root
    report = summarize(predictions, class_names, data.splits[SPLIT].samples, data_root)
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    try:
        matplotlib_agg()
    except ImportError as error:
        log.warning("evaluation report without figures: matplotlib is not installed (%s)", error)
    else:
        matrix = np.array(report["confusion_matrix"])
        write_png(confusion_figure(matrix, class_names), folder / "confusion_matrix.png")
        write_png(per_class_figure(matrix, class_names, report["accuracy"]),
                  folder / "per_class_accuracy.png")
        write_png(reliability_figure(report["calibration_bins"], report["expected_calibration_error"]),
                  folder / "reliability_diagram.png")
        write_png(misclassified_figure(*misclassified_pictures(report, data_root, image_size)),
                  folder / "misclassified.png")
    log.info("evaluation report written to %s: test accuracy %.4f, ECE %.4f, %d misclassified", folder,
             report["accuracy"], report["expected_calibration_error"], report["misclassified"])
    return {"report": f"{REPORT_DIR}/report.json", "test_accuracy": report["accuracy"],
            "expected_calibration_error": report["expected_calibration_error"],
            "worst_classes": [{"class": row["class"], "accuracy": row["accuracy"]} for row in report["worst_classes"]]}
