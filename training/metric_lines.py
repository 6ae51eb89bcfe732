"""The metric names and the line train.py logs them in, and the patterns that read them back.

Every epoch train.py logs one line `epoch=<n> train_loss=<v> ... test_top5_accuracy=<v> lr=<v> ...`; SageMaker's
metric definitions (aws/sagemaker_jobs.py), the tuning objective and the tests read the values back with
`metric_pattern`. metrics.json's history rows use the same `<split>_<metric>` keys. No torch here: the AWS side
imports this module without the training stack.
"""

SPLITS = ("train", "valid", "test")
SPLIT_METRICS = ("loss", "accuracy", "top5_accuracy")
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_key(split, metric):
    """`valid_loss`: the metric's name in the log line and in metrics.json."""
    return f"{split}_{metric}"


def metric_pattern(split, metric):
    """A regex whose one group is the metric's value in a logged line."""
    return rf"\b{metric_key(split, metric)}={NUMBER}"


def flat_metrics(split_metrics):
    """{split: {metric: value}} as {`<split>_<metric>`: value}, splits in SPLITS order."""
    return {metric_key(split, metric): split_metrics[split][metric]
            for split in SPLITS if split in split_metrics for metric in SPLIT_METRICS}


def format_metrics(split_metrics):
    return " ".join(f"{key}={value:.4f}" for key, value in flat_metrics(split_metrics).items())


def epoch_line(epoch, split_metrics, lr, seconds, images_per_second):
    return (f"epoch={epoch} {format_metrics(split_metrics)} lr={lr:.6f} epoch_seconds={seconds:.1f} "
            f"images_per_second={images_per_second:.0f}")
