"""matplotlib for the PNGs rank 0 draws at the end of training (the training curve, the evaluation report).

matplotlib is in requirements.txt and in SageMaker's PyTorch training images (their SageMaker stage installs
seaborn, which needs it). Where it is missing (a bare EC2 host), training still ends with its model and metrics;
the callers warn instead of drawing.
"""


def matplotlib_agg():
    """matplotlib's Figure and Agg canvas (not pyplot: no backend selection, no global figure state), imported when
    a figure is drawn: the import takes most of a second, and only rank 0 draws, once, at the end. Raises
    ImportError when matplotlib is not installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    return Figure, FigureCanvasAgg


def write_png(figure, path):
    _, FigureCanvasAgg = matplotlib_agg()
    FigureCanvasAgg(figure).print_png(str(path))
    return path
