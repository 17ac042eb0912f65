"""A feature pass on a CPU runs the backbone in chunks of the fastest size it measures (ChunkSize): the
features are those of whole-batch calls, for pooled and token outputs, and the size it keeps is the one
measured fastest per example."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tunewise.features import CHUNK_SIZES, ChunkSize, extract_features


class Recorder(nn.Module):
    """A linear map that records the batch of every call; token inputs give (B, T, F) outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)
        self.calls: list[int] = []

    def forward(self, x):
        ids = x["input_ids"] if isinstance(x, dict) else x
        self.calls.append(len(ids))
        return self.linear(ids.float())


def test_chunked_features_equal_whole_batch_ones_for_pooled_and_token_outputs():
    torch.manual_seed(0)
    model = Recorder()
    x, y = torch.randn(150, 6), torch.randint(0, 3, (150,))
    features = extract_features(model, DataLoader(TensorDataset(x, y), batch_size=64), torch.device("cpu"))
    assert torch.allclose(features["features"], model.linear(x).detach(), atol=1e-6)
    assert torch.equal(features["targets"], y) and sum(model.calls) == 150
    assert model.calls[:4] == [16] * 4 and model.calls[4:12] == [8] * 8  # sizes tried, one batch each

    ids, labels = torch.randn(70, 5, 6), torch.randint(0, 3, (70, 5))
    labels[:, -1] = -100  # an unscored position (padding)
    loader = DataLoader([({"input_ids": i}, t) for i, t in zip(ids, labels, strict=True)], batch_size=32)
    tokens = extract_features(model, loader, torch.device("cpu"))
    assert torch.allclose(tokens["features"], model.linear(ids[:, :-1].reshape(-1, 6)).detach(), atol=1e-6)
    assert tokens["lengths"].tolist() == [4] * 70


def test_the_fastest_size_is_found_by_climbing_and_kept_and_an_accelerator_takes_whole_batches():
    def climb(per_example: dict[int, float]) -> tuple[list[int], int]:
        """The sizes tried (each batch's first call slow: left out) and the one kept."""
        chunks, tried = ChunkSize(torch.device("cpu"), batch_size=64), []
        while (size := chunks.next(64)) != chunks.fastest():
            tried.append(size)
            chunks.measured(size, [9.0] + [size * per_example[size]] * (64 // size - 1))
        return tried, chunks.next(64)

    assert climb({4: 1.0, 8: 2.0, 16: 3.0, 32: 4.0}) == ([16, 8, 4], 4)  # smaller is faster: down to 4
    assert climb({4: 4.0, 8: 3.0, 16: 2.0, 32: 1.0}) == ([16, 8, 32], 32)
    assert climb({4: 3.0, 8: 1.0, 16: 2.0, 32: 4.0}) == ([16, 8, 4], 8)
    assert climb({4: 3.0, 8: 2.0, 16: 1.0, 32: 2.0}) == ([16, 8, 32], 16)
    assert set(CHUNK_SIZES) >= {4, 8, 16, 32}
    chunks = ChunkSize(torch.device("cpu"), batch_size=64)
    assert chunks.next(20) == 20 and chunks.next(16) == 16  # a partial batch: not a trial of 16
    chunks.measured(16, [0.1])  # a whole batch of 16 in one call (all there was) is not a trial either
    assert chunks.fastest() is None and chunks.next(64) == 16
    assert ChunkSize(torch.device("cpu"), batch_size=6).next(6) == 6  # too small a batch to try anything
    assert ChunkSize(torch.device("cuda"), batch_size=64).next(64) == 64
