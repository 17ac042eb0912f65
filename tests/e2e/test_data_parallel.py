"""A search whose trials run data-parallel: two CPU processes under torchrun (gloo), the same
way `accelerate launch` or torchrun runs them on GPUs. Rank 0 alone talks to Optuna and writes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data import load_data
from tunewise.records import Leaderboard


def test_a_search_under_torchrun_trains_each_trial_on_two_shards(image_folder, tiny_weights, tmp_path):
    out = tmp_path / "search"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "tunewise", "search", "--model", "timm:test_resnet", "--weights", str(tiny_weights),
               "--data", str(image_folder),
               "--strategies", "linear_probe,full", "--epochs", "2", "--rates", "1", "--seeds", "2", "--no-scratch",
               "--batch-size", "4", "--num-workers", "0", "--image-size", "32", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("search folder:") == 1  # rank 1 prints nothing

    board = Leaderboard.load(out / "leaderboard.json")
    ran = [(t.tier, t.strategy, t.seed, t.augment) for t in board.trials if t.state == "complete"]
    assert len(ran) == 5 and len(set(ran)) == 5  # each trial once (full also without augmentation), on 2 processes
    train_images = len(load_data(DataConfig(data=str(image_folder))).train)
    for trial in board.trials:
        folder = Path(trial.run_dir)
        assert json.loads((folder / "record.json").read_text())["processes"] == 2
        if trial.strategy == "full":  # the images, not cached features: each rank took half the batches
            steps = {json.loads(line)["steps"] for line in (folder / "metrics.jsonl").read_text().splitlines()}
            assert steps == {math.ceil(math.ceil(train_images / 4) / 2)}
