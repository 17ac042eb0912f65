"""The CLI as a user drives it: fit, then evaluate and predict on the run folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys


def tunewise(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_fit_evaluate_predict(image_folder, tmp_path):
    run = tmp_path / "run"
    fit = tunewise("fit", "--model", "pkg:efficientnet_lite0", "--data", image_folder,
                   "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--lr", "0.01",
                   "--num-workers", "0", "--out", run)
    assert fit.returncode == 0, fit.stderr
    assert f"run folder: {run}" in fit.stdout
    record = json.loads((run / "record.json").read_text())
    assert record["strategy"] == "linear_probe" and record["cached_features"]

    evaluate = tunewise("evaluate", run, "--data", image_folder, "--split", "test", "--json")
    assert evaluate.returncode == 0, evaluate.stderr
    metrics = json.loads(evaluate.stdout)
    assert abs(metrics["accuracy"] - record["test"]["accuracy"]) < 1e-6  # same model, same split
    assert metrics["examples"] == sum(map(sum, metrics["confusion_matrix"]))

    out = tmp_path / "predictions.csv"
    predict = tunewise("predict", run, image_folder / "red", image_folder / "blue" / "000.png",
                       "--output", out)
    assert predict.returncode == 0, predict.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 13
    assert set(rows[0]) >= {"path", "label", "probability", "p_red", "p_green", "p_blue"}
    for row in rows:
        total = sum(float(row[f"p_{c}"]) for c in ("red", "green", "blue"))
        assert abs(total - 1) < 1e-4


def test_help_explains_every_subcommand():
    result = tunewise("--help")
    assert result.returncode == 0
    for command in ("fit", "evaluate", "predict", "demo"):
        assert command in result.stdout
    fit_help = tunewise("fit", "--help").stdout
    assert "--strategy" in fit_help and "linear_probe" in fit_help and "--resume" in fit_help
