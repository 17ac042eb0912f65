"""rank(): candidates scored from one feature pass each, failures reported, the ranking checked
against short fine-tunes (tiny random-weight models; the scorers have their own tests)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tunewise import DataConfig, TrainConfig, rank
from tunewise.errors import TunewiseError
from tunewise.records import Ranking

TINY = ["random:timm:test_resnet", "random:timm:test_vit", "random:torchvision:mobilenet_v3_small"]


def test_rank_scores_every_candidate_reports_failures_and_verifies(image_folder, tmp_path):
    data = DataConfig(data=str(image_folder), image_size=32)
    ranking = rank([*TINY, "timm:no_such_model", "pkg:minilm"], data, verify=1, out=tmp_path / "rank",
                   train=TrainConfig(epochs=1, batch_size=8, num_workers=0))
    ranked = [c for c in ranking.candidates if c.error is None]
    assert {c.model for c in ranked} == set(TINY)
    failed = {c.model: c.error for c in ranking.candidates if c.error}
    assert "unknown timm model" in failed["timm:no_such_model"]
    assert "needs an image model" in failed["pkg:minilm"]  # a text model among image candidates
    assert [c.combined for c in ranked] == sorted((c.combined for c in ranked), reverse=True)
    for c in ranked:
        assert math.isnan(c.scores["leep"])  # random weights have no source classifier
        assert all(math.isfinite(c.scores[n]) for n in ("logme", "nce", "hscore", "knn", "linear"))
    verified = [c for c in ranked if c.finetuned is not None]
    assert [c.model for c in verified] == [ranked[0].model, ranked[-1].model]  # the top 1 and the last
    assert ranking.kendall_tau in (-1.0, 1.0) or ranking.kendall_tau is None  # two points: agree or not
    again = Ranking.load(tmp_path / "rank" / "ranking.json")
    assert again.candidates[0].model == ranked[0].model
    assert (tmp_path / "rank" / "verify.png").is_file() and (tmp_path / "rank" / "report.html").is_file()


def test_features_come_from_the_linear_probe_cache(image_folder, tmp_path):
    """A ranked candidate's features are the ones its linear probe reads: nothing is extracted twice."""
    from tunewise import fit
    from tunewise.config import default_cache_dir

    data = DataConfig(data=str(image_folder), image_size=32)
    rank(TINY[:2], data, out=tmp_path / "rank")
    entries = sorted((default_cache_dir() / "features").glob("*.safetensors"))  # not their locks
    assert len(entries) == 2  # one per candidate
    record = fit(TINY[0], data, "linear_probe", out=tmp_path / "probe", epochs=1, num_workers=0)
    assert record.cached_features
    after = set((default_cache_dir() / "features").glob("*.safetensors"))
    assert set(entries) <= after and len(after) == len(entries) + 2  # val and test; train came from the cache


@pytest.mark.parametrize("models,task,match", [
    (["random:timm:test_resnet"], "image_classification", "nothing to rank with 1 candidate"),
    (["random:timm:test_resnet", "timm:no_such_model"], "image_classification", "only 1 of the candidates"),
    (TINY[:2], "question_answering", "question_answering has spans, boxes or masks"),
    (TINY[:2], "object_detection", "object_detection has spans, boxes or masks"),
])
def test_rank_refuses_what_it_cannot_rank(models, task, match, image_folder, tmp_path):
    with pytest.raises(TunewiseError, match=match):
        rank(models, DataConfig(data=str(image_folder), image_size=32), task=task, out=tmp_path / "rank")


def test_rank_command_prints_the_table_and_writes_the_report(image_folder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tunewise", "rank", "--models", ",".join(TINY[:2]), "--data",
                           str(image_folder), "--image-size", "32", "--out", str(tmp_path / "rank")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ranking folder:" in done.stdout and (tmp_path / "rank" / "report.md").is_file()
    single = subprocess.run([sys.executable, "-m", "tunewise", "rank", "--models", TINY[0], "--data",
                             str(image_folder)], capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "Traceback" not in single.stderr and "nothing to rank" in single.stderr
