"""Open axes: a task, a strategy, a backbone source and a scorer, each defined in one place (below,
inside this test), registered, and run through fit, search, evaluate, predict, export and rank
without touching any other file.

The toy task classifies 8-number vectors read from an .npz file (its own data kind, metric, head
and prediction reader); the toy source builds a small MLP (`toy:mlp`, `toy:wide`); the toy
strategy trains the head and the backbone's last layer group; the toy scorer measures how far apart
the class centroids of the features are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import past_edges, rounded
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import tunewise
from tunewise.backbones import SOURCES, Backbone, Preprocess
from tunewise.backbones.base import parameter_groups
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.ranking import SCORERS, scorer
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.study import SearchConfig
from tunewise.tasks import TASKS, Task, TaskModel

CLASSES = ["low", "high"]
TRAIN = TrainConfig(epochs=3, batch_size=16, num_workers=0, seed=0, lr=0.05, warmup_epochs=0)


# --- the toy task: one file's worth ----------------------------------------------------------------

@dataclass
class VectorSet(Dataset):
    """Vectors (N, 8) with one class each."""

    vectors: torch.Tensor
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.vectors[i], self.labels[i]

    def subset(self, indices) -> VectorSet:
        return VectorSet(self.vectors[list(indices)], [self.labels[i] for i in indices])

    def fingerprint(self) -> str:
        return str(hash((self.vectors.numpy().tobytes(), tuple(self.labels))))


class ToyVectors(Task):
    name: ClassVar[str] = "toy_vectors"
    metric: ClassVar[str] = "hit_rate"
    metrics_names: ClassVar[tuple[str, ...]] = ("hit_rate", "confidence")
    modality: ClassVar[str] = "vector"
    rankable: ClassVar[bool] = True
    data_kind: ClassVar[type] = VectorSet
    reads: ClassVar[str] = "vectors of 8 numbers with one class each"
    path_help: ClassVar[str] = "an .npz file with x (N, 8) and y (N,)"

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        stored = np.load(path)
        whole = VectorSet(torch.tensor(stored["x"], dtype=torch.float32), stored["y"].tolist())
        n = len(whole)
        return DataSplits(train=whole.subset(range(0, n // 2)), val=whole.subset(range(n // 2, 3 * n // 4)),
                          test=whole.subset(range(3 * n // 4, n)), classes=list(CLASSES))

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, len(classes)), backbone.layer_groups)

    def loader(self, data: VectorSet, preprocess, train: TrainConfig, training: bool) -> DataLoader:
        return DataLoader(data, batch_size=train.batch_size, shuffle=training)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets)

    def metrics(self, outputs, targets, data) -> dict:
        probabilities = torch.cat(outputs).float().softmax(1)
        hits = probabilities.argmax(1) == torch.cat(targets)
        return {"hit_rate": float(hits.float().mean()), "confidence": float(probabilities.max(1).values.mean())}

    def predict(self, run, inputs, batch_size):
        from tunewise.export import load_model

        model, info = load_model(run)
        vectors = torch.tensor(np.stack([np.load(p) for p in inputs]), dtype=torch.float32)
        with torch.no_grad():
            best = model(vectors).argmax(1)
        return [{"path": str(p), "label": info["classes"][int(b)]} for p, b in zip(inputs, best, strict=True)]


# --- the toy backbone source ------------------------------------------------------------------------

def toy_source(model_name: str, pretrained: bool = True, weights=None) -> Backbone:
    width = {"mlp": 16, "wide": 32}[model_name]
    torch.manual_seed(0 if pretrained else torch.seed())
    model = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    return Backbone(name=f"toy:{model_name}", arch=f"toy:{model_name}", model=model, num_features=width,
                    layer_groups=parameter_groups(model), preprocess=Preprocess(input_size=8, resize_size=8),
                    pretrained=pretrained)


# --- the toy strategy --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToyLastLayer(Strategy):
    """The head and the backbone's last layer group train; everything else is frozen."""

    name: ClassVar[str] = "toy_last_layer"
    default_lr: ClassVar[float] = 0.05
    rate_range: ClassVar[tuple[float, float]] = (0.01, 0.1)

    def prepare(self, model: nn.Module) -> None:
        last = set(model.layer_groups[-1])
        for name, parameter in model.backbone.named_parameters():
            parameter.requires_grad_(name in last)


# --- the toy scorer ----------------------------------------------------------------------------------

def centroid_gap(features: np.ndarray, labels: np.ndarray, source_probs=None) -> float:
    """Distance between the two class centroids over the mean spread: larger separates better."""
    centroids = [features[labels == c].mean(0) for c in np.unique(labels)]
    return float(np.linalg.norm(centroids[0] - centroids[-1]) / (features.std() + 1e-9))


# --- registration, and the runs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered():
    TASKS.add(ToyVectors)
    SOURCES.register("toy")(toy_source)
    STRATEGIES.add(ToyLastLayer)
    scorer("toy_centroid_gap")(centroid_gap)
    yield
    TASKS.unregister(ToyVectors.name)
    SOURCES.unregister("toy")
    STRATEGIES.unregister(ToyLastLayer.name)
    SCORERS.unregister("toy_centroid_gap")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 64)
    x = rng.normal(size=(128, 8)) + np.where(y[:, None] == 1, 1.5, -1.5)
    path = tmp_path_factory.mktemp("toy") / "vectors.npz"
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("home")
    patch.setenv("HOME", str(folder))
    yield folder
    patch.undo()


def test_fit_evaluate_predict_and_export_run_a_new_task_strategy_and_source(registered, data, home, tmp_path):
    record = tunewise.fit("toy:mlp", data, "toy_last_layer", task="toy_vectors", train=TRAIN,
                          out=tmp_path / "run", test=True)
    assert record.metric == "hit_rate" and record.second_metric == "confidence"
    assert record.val["hit_rate"] > 0.8, record.curve  # two clusters 3 apart: a trained head separates them
    assert 0 < record.trainable_params < record.total_params  # the strategy froze the first layers

    test = tunewise.evaluate(record.run_dir, data, split="test")
    assert test["hit_rate"] == pytest.approx(record.test["hit_rate"])

    vectors = [tmp_path / "a.npy", tmp_path / "b.npy"]
    np.save(vectors[0], np.full(8, -1.5))
    np.save(vectors[1], np.full(8, 1.5))
    assert [row["label"] for row in tunewise.predict(record.run_dir, vectors)] == ["low", "high"]

    info = json.loads((Path(record.run_dir) / "model.json").read_text())
    assert info["task"] == "toy_vectors" and info["arch"] == "toy:mlp"
    with safe_open(Path(record.run_dir) / "model.safetensors", "pt") as exported:
        assert "head.weight" in set(exported.keys())


def test_search_explores_the_new_strategy_on_the_new_task(registered, data, home, tmp_path):
    config = SearchConfig(strategies=("toy_last_layer",), epochs=2, rates=2, seeds=1, finalists=1, scratch=False,
                          budget="10epochs")
    board = tunewise.search("toy:mlp", data, config, task="toy_vectors", train=TRAIN, out=tmp_path / "search")
    explored = [t for t in board.trials if t.tier == "explore"]
    assert {t.strategy for t in explored} == {"toy_last_layer"}
    tried, ranged = {rounded(t.lr) for t in explored}, {rounded(r) for r in ToyLastLayer.rates(2)}
    assert ranged <= tried and len(tried - ranged) == 1 and tried - ranged <= past_edges(ToyLastLayer.rates(2))
    assert board.winner.startswith("toy_last_layer") and board.metric == "hit_rate"


def test_rank_scores_the_new_source_with_the_new_scorer(registered, data, home, tmp_path):
    ranking = tunewise.rank(["toy:mlp", "toy:wide"], data, task="toy_vectors", out=tmp_path / "rank")
    assert all(np.isfinite(c.scores["toy_centroid_gap"]) for c in ranking.candidates)


def test_a_strategy_knob_is_checked_when_the_strategy_is_made():
    from tunewise.errors import ConfigError
    from tunewise.strategies import get_strategy

    with pytest.raises(ConfigError, match="decay must be in"):
        get_strategy("llrd", decay=2.0)  # no model, no data: the check runs at construction
