"""Benchmark: a CPU feature pass in whole loader batches against calls of the size it measures fastest.

tunewise's feature pass (`tunewise.features.extract_features`: linear probes, LP-FT's probe, the search's
cheap tier, `rank`) reads batches of 64 and, on a CPU, runs the backbone on each in calls of one of
CHUNK_SIZES, trying each on one batch and keeping the fastest per example (ChunkSize). This compares it
with the same pass in whole-batch calls (CHUNK_SIZES emptied), in one process, on random inputs (the
decoding is not what is measured): ResNet-50 (torchvision, random weights) and EfficientNet-Lite0
(pkg:efficientnet_lite0) at 224 px, EfficientNet-Lite0 at 96 px (the demo's size), MiniLM (pkg:minilm) on
48 tokens. The features agree to float rounding (printed). Each pass runs --repeats times, the order
reversed on every other repeat (ABBA); the fastest of each is compared.

    python bench/feature_chunks.py
    python bench/feature_chunks.py --images 512 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import tunewise.features as features
from tunewise.backbones import load_backbone


def models(images: int) -> list[tuple[str, torch.nn.Module, DataLoader]]:
    """(label, backbone, loader of 64) for each model measured."""
    import torchvision

    torch.manual_seed(0)
    labels = torch.zeros(images, dtype=torch.long)
    pixels = {size: TensorDataset(torch.rand(images // (2 if size == 224 else 1), 3, size, size), labels[
        :images // (2 if size == 224 else 1)]) for size in (96, 224)}
    ids = torch.randint(1000, 5000, (images, 48))
    tokens = [({"input_ids": i, "attention_mask": torch.ones_like(i)}, 0) for i in ids]
    lite0, minilm = load_backbone("pkg:efficientnet_lite0").model, load_backbone("pkg:minilm").model
    return [("ResNet-50, 224 px", torchvision.models.resnet50(), DataLoader(pixels[224], batch_size=64)),
            ("EfficientNet-Lite0, 224 px", lite0, DataLoader(pixels[224], batch_size=64)),
            ("EfficientNet-Lite0, 96 px", lite0, DataLoader(pixels[96], batch_size=64)),
            ("MiniLM, 48 tokens", minilm, DataLoader(tokens, batch_size=64))]


def timed(model: torch.nn.Module, loader: DataLoader, chunked: bool) -> tuple[float, torch.Tensor]:
    sizes = features.CHUNK_SIZES
    features.CHUNK_SIZES = sizes if chunked else ()
    try:
        start = time.perf_counter()
        out = features.extract_features(model, loader, torch.device("cpu"))["features"]
        return time.perf_counter() - start, out
    finally:
        features.CHUNK_SIZES = sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=384, help="inputs at 96 px and text (half at 224 px)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"start: load average {os.getloadavg()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    rows = []
    for label, model, loader in models(args.images):
        model.eval()
        timed(model, loader, chunked=False)  # warm: the first pass of a process sets up every kernel
        seconds: dict[bool, list[float]] = {False: [], True: []}
        outputs = {}
        for repeat in range(args.repeats):
            for chunked in (False, True) if repeat % 2 == 0 else (True, False):
                took, outputs[chunked] = timed(model, loader, chunked)
                seconds[chunked].append(took)
        difference = (outputs[True] - outputs[False]).abs().max().item()
        whole, tuned = min(seconds[False]), min(seconds[True])
        rows.append((label, len(loader.dataset), whole, tuned, difference))
        print(f"  {label}: whole batches {whole:.2f} s, chunks {tuned:.2f} s, {whole / tuned:.2f}x "
              f"(features differ by up to {difference:.1g})", flush=True)
    print(f"\n{'model':28} {'inputs':>6} {'whole s':>8} {'chunks s':>9} {'ratio':>6}")
    for label, count, whole, tuned, _ in rows:
        print(f"{label:28} {count:>6} {whole:>8.2f} {tuned:>9.2f} {whole / tuned:>5.2f}x")
    print(f"ratio: whole-batch seconds / chunked seconds, fastest of {args.repeats} each (ABBA); "
          f"end: load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
