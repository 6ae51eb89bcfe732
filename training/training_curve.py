"""The training-curve PNG: loss and top-1 accuracy per epoch for train, valid and test, drawn with matplotlib.

Where matplotlib is missing (training/figures.py), training still ends with its model and metrics, and a warning
says why there is no curve.
"""

import logging

from training.figures import matplotlib_agg, write_png
from training.metric_lines import SPLITS, metric_key

log = logging.getLogger("train")

PANELS = (("loss", "mean cross-entropy"), ("accuracy", "top-1 accuracy"))
SIZE_INCHES, DPI = (8.8, 3.2), 100


def curve_figure(history):
    """A matplotlib Figure of `history` (metrics.json's rows): one panel per metric, one line per split."""
    Figure, _ = matplotlib_agg()
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.9, wspace=0.15)
    epochs = [row["epoch"] for row in history]
    splits = [split for split in SPLITS if history and metric_key(split, "loss") in history[0]]
    for axes, (metric, title) in zip(figure.subplots(1, len(PANELS)), PANELS):
        for split in splits:
            axes.plot(epochs, [row[metric_key(split, metric)] for row in history], marker="o", label=split)
        axes.set(title=title, xlabel="epoch", ylim=(0, 1) if metric == "accuracy" else (0, None))
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if splits:
            axes.legend()
    return figure


def write_training_curve(history, path):
    """Write the curve of `history` as a PNG at `path`; the path, or None when matplotlib is not installed."""
    try:
        matplotlib_agg()
    except ImportError as error:
        log.warning("no training curve: matplotlib is not installed (%s); metrics.json has the same figures", error)
        return None
    return write_png(curve_figure(history), path)
