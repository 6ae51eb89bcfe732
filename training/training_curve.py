"""The training-curve PNG: loss and top-1 accuracy per epoch for train, valid and test.

Drawn with Pillow, which torchvision already brings: no plotting library to import (matplotlib's import alone
cost more than ten head-mode epochs) or to install in the SageMaker training image.
"""

from PIL import Image, ImageDraw

COLOURS = {"train": (31, 119, 180), "valid": (255, 127, 14), "test": (44, 160, 44)}
PANEL_W, PANEL_H = 440, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 34, 40
GRID = (225, 225, 225)
INK = (40, 40, 40)


def _ticks(low, high, count=5):
    step = (high - low) / (count - 1) if high > low else 1.0
    return [low + i * step for i in range(count)]


def _panel(draw, origin_x, title, epochs, series, y_range, legend_at_bottom=False):
    left, top = origin_x + MARGIN_LEFT, MARGIN_TOP
    right, bottom = origin_x + PANEL_W - MARGIN_RIGHT, PANEL_H - MARGIN_BOTTOM
    low, high = y_range
    if high <= low:
        low, high = low - 0.5, high + 0.5
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)

    def point(epoch, value):
        x = left + (epoch - first) / span * (right - left) if last > first else (left + right) / 2
        y = bottom - (value - low) / (high - low) * (bottom - top)
        return x, y

    draw.text((left, 10), title, fill=INK)
    for tick in _ticks(low, high):
        y = point(first, tick)[1]
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((origin_x + 4, y - 6), f"{tick:.3g}", fill=INK)
    step = max(1, round(span / 10))
    for epoch in range(first, last + 1, step):
        x = point(epoch, low)[0]
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        draw.text((x - 4, bottom + 6), str(epoch), fill=INK)
    draw.text(((left + right) / 2 - 14, bottom + 22), "epoch", fill=INK)
    draw.rectangle([left, top, right, bottom], outline=INK)
    for row, (split, values) in enumerate(series.items()):
        points = [point(e, v) for e, v in zip(epochs, values)]
        if len(points) > 1:
            draw.line(points, fill=COLOURS[split], width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS[split])
        legend_y = (bottom - 8 - 14 * len(series) if legend_at_bottom else top + 8) + 14 * row
        draw.line([(right - 70, legend_y + 6), (right - 52, legend_y + 6)], fill=COLOURS[split], width=2)
        draw.text((right - 46, legend_y), split, fill=INK)


def write_training_curve(history, path):
    """Write `history` (metrics.json's rows: epoch, <split>_loss, <split>_accuracy) as a two-panel PNG."""
    image = Image.new("RGB", (2 * PANEL_W, PANEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    epochs = [row["epoch"] for row in history]
    splits = [s for s in COLOURS if history and f"{s}_loss" in history[0]]
    if epochs:
        losses = {s: [row[f"{s}_loss"] for row in history] for s in splits}
        every_loss = [v for values in losses.values() for v in values]
        _panel(draw, 0, "mean cross-entropy", epochs, losses, (0.0, max(every_loss)))
        accuracies = {s: [row[f"{s}_accuracy"] for row in history] for s in splits}
        _panel(draw, PANEL_W, "top-1 accuracy", epochs, accuracies, (0.0, 1.0), legend_at_bottom=True)
    image.save(path, format="PNG")
    return path
