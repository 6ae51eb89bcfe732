"""The evaluation report train.py writes from the best weights on the test split: its numbers are what model.pth
scores through the serving preprocessing, and its figures are PNGs drawn from those numbers."""

import json
import logging
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from training import train
from training.evaluation_report import (Predictions, calibration, confusion_matrix, misclassified,
                                        misclassified_figure, misclassified_pictures, per_class_accuracy,
                                        worst_classes, write_evaluation_report)
from training.imagefolder_data import scan_data
from training_testlib import assert_report_is_what_the_model_scores, tiny_args

FIGURES = ("confusion_matrix.png", "per_class_accuracy.png", "reliability_diagram.png", "misclassified.png")


def test_the_report_is_what_the_saved_weights_score_on_the_test_split_through_the_serving_preprocessing(
        trained_model_dir, tiny_image_folder):
    report = assert_report_is_what_the_model_scores(trained_model_dir.parent, tiny_image_folder)
    metrics = json.loads((trained_model_dir.parent / "output" / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["final"]["test_accuracy"], abs=1e-6)
    assert report["images"] == 12 and report["unreadable_images"] == 0       # 3 classes x 4 test images
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == 12
    assert [row["correct"] for row in report["per_class"]] == list(np.diag(matrix))
    assert [row["images"] for row in report["per_class"]] == [4, 4, 4]
    assert report["class_names"] == ["Red circle", "Green square", "Blue triangle"]
    accuracies = [row["accuracy"] for row in report["worst_classes"]]
    assert accuracies == sorted(row["accuracy"] for row in report["per_class"])     # 3 classes: all, worst first


def test_metrics_json_summarizes_the_report_under_evaluation(trained_model_dir):
    output = trained_model_dir.parent / "output"
    report = json.loads((output / "evaluation" / "report.json").read_text())
    summary = json.loads((output / "metrics.json").read_text())["evaluation"]
    assert summary == {"report": "evaluation/report.json", "test_accuracy": report["accuracy"],
                       "expected_calibration_error": report["expected_calibration_error"],
                       "worst_classes": [{"class": row["class"], "accuracy": row["accuracy"]}
                                         for row in report["worst_classes"]]}
    assert 0 <= summary["expected_calibration_error"] <= 1


def test_every_figure_is_a_png_of_a_readable_size(trained_model_dir):
    folder = trained_model_dir.parent / "output" / "evaluation"
    for name in FIGURES:
        with Image.open(folder / name) as figure:
            assert figure.format == "PNG", name
            assert 500 <= figure.width <= 1200 and 350 <= figure.height <= 1200, (name, figure.size)
            figure.verify()
        with Image.open(folder / name) as figure:
            assert len(np.unique(np.asarray(figure.convert("L")))) > 20, name        # drawn, not blank


def test_without_a_test_split_training_writes_no_report_and_says_so(tiny_image_folder, tmp_path, capsys):
    data = shutil.copytree(tiny_image_folder, tmp_path / "data", ignore=shutil.ignore_patterns("test"))
    result = train.main(train.parse_args(tiny_args(data, tmp_path, "--mode", "finetune", "--epochs", "1")))
    assert f"no evaluation report: {data} has no test/ split" in capsys.readouterr().out
    assert "evaluation" not in result
    assert not (tmp_path / "output" / "evaluation").exists()
    assert "evaluation" not in json.loads((tmp_path / "output" / "metrics.json").read_text())


def test_an_unreadable_test_image_is_left_out_of_the_report_and_the_rest_keep_their_names(tiny_image_folder,
                                                                                        tmp_path):
    data = shutil.copytree(tiny_image_folder, tmp_path / "data")
    broken = sorted((data / "test" / "001.Red_circle").iterdir())[1]
    broken.write_bytes(b"not an image")
    train.main(train.parse_args(tiny_args(data, tmp_path, "--mode", "finetune", "--epochs", "1",
                                          "--image-cache", "memory")))
    report = assert_report_is_what_the_model_scores(tmp_path, data, leave_out={broken})
    assert (report["images"], report["unreadable_images"]) == (11, 1)


# --- the numbers, on hand-made predictions ----------------------------------------------------------------------

def test_expected_calibration_error_weighs_each_bins_gap_by_its_share_of_the_images():
    confidences = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55]
    correct = [1, 1, 1, 0, 1, 0]
    bins, ece = calibration(confidences, correct, bins=10)
    # (0.9, 1]: 4 images, accuracy 0.75, confidence 0.95; (0.5, 0.6]: 2 images, accuracy 0.5, confidence 0.55
    assert ece == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.05)
    assert [b["images"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 4]
    assert bins[9]["accuracy"] == pytest.approx(0.75) and bins[9]["confidence"] == pytest.approx(0.95)
    assert bins[0]["accuracy"] is None
    assert calibration([1.0, 1.0], [0, 0])[1] == pytest.approx(1.0)            # sure and always wrong
    assert calibration([0.8] * 5, [1, 1, 1, 1, 0])[1] == pytest.approx(0.0)     # 80% sure, 80% right
    bins, _ = calibration([0.5], [1], bins=10)
    assert bins[4]["images"] == 1            # a bin holds its upper edge: (0.4, 0.5]


def test_the_confusion_matrix_has_true_classes_as_rows_and_per_class_accuracy_its_diagonal_share():
    matrix = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 1, 0], num_classes=4)
    assert matrix.tolist() == [[1, 2, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    accuracy = per_class_accuracy(matrix)
    assert accuracy[:3].tolist() == pytest.approx([1 / 3, 1.0, 0.0]) and np.isnan(accuracy[3])


def test_the_worst_classes_are_the_ten_lowest_accuracies_lowest_first_ties_in_class_order():
    accuracy = np.array([0.9, 0.1, 0.5, np.nan, 0.5, 0.2, 1.0, 0.3, 0.8, 0.05, 0.7, 0.6, 0.4, 0.95])
    worst = worst_classes(accuracy)
    assert worst.tolist() == [9, 1, 5, 7, 12, 2, 4, 11, 10, 8]
    assert 3 not in worst                                                       # no test image: no accuracy
    assert max(accuracy[worst]) <= min(accuracy[[0, 6, 13]])


def _predictions(rows, labels):
    probabilities = np.array(rows, dtype=np.float64)
    return Predictions(probabilities=probabilities, labels=np.array(labels), indices=np.arange(len(labels)))


def test_the_misclassified_grid_shows_only_wrong_predictions_the_most_confident_first_and_at_most_the_limit(
        tiny_image_folder):
    predictions = _predictions([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.95, 0.05]],
                               labels=[0, 0, 1, 1, 0, 1])
    assert misclassified(predictions).tolist() == [5, 1, 3, 4]        # wrong with confidence 0.95, 0.7, 0.6, 0.55
    assert misclassified(predictions, limit=2).tolist() == [5, 1]
    assert misclassified(_predictions([[0.9, 0.1]], labels=[0])).tolist() == []

    report = {"misclassified_shown": [
        {"image": "test/001.Red_circle/test_001_0000.jpg", "true": "Red circle", "predicted": "Green square",
         "confidence": 0.875}]}
    pictures, titles = misclassified_pictures(report, tiny_image_folder, image_size=32)
    assert titles == ["true: Red circle\npredicted: Green square (88%)"]
    assert pictures[0].size == (224, 224)
    assert misclassified_figure(pictures, titles).texts[0].get_text() == titles[0]


def test_without_matplotlib_the_report_has_its_numbers_and_a_warning_instead_of_figures(tiny_image_folder, tmp_path,
                                                                                         monkeypatch, caplog):
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)       # what an import of a missing package meets
    data = scan_data(tiny_image_folder)
    labels = [label for _, label in data.splits["test"].samples]
    predictions = _predictions([[0.8, 0.1, 0.1]] * len(labels), labels)      # always the first class
    logger = logging.getLogger("train")      # train.py's logging setup stops it propagating to caplog's root
    logger.addHandler(caplog.handler)
    try:
        summary = write_evaluation_report(tmp_path, predictions, data, image_size=32)
    finally:
        logger.removeHandler(caplog.handler)
    assert "evaluation report without figures: matplotlib is not installed" in caplog.text
    assert sorted(path.name for path in (tmp_path / "evaluation").iterdir()) == ["report.json"]
    assert summary["test_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert summary["expected_calibration_error"] == pytest.approx(0.8 - 1 / 3, abs=1e-6)
    assert [row["class"] for row in summary["worst_classes"]] == ["Green square", "Blue triangle", "Red circle"]
