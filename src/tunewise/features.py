"""Extract-once feature cache: a frozen backbone is a fixed function, so run it once per split.

Shared by linear probes and LP-FT (and later kNN and transferability ranking). A cache entry
is keyed by the backbone's weights, the preprocessing and the data, so any change recomputes.
An entry is filled under a lock, written to a temporary name and renamed, and carries a checksum
of its tensors: a killed, torn or edited entry is never used, and concurrent runs share one entry.
Pooled features are stored one row per example; token features (NER) one row per labelled
token, with each example's row count, so the head trains on exactly what it would see.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from tunewise.errors import one_line
from tunewise.io import write_atomic

log = logging.getLogger("tunewise")

IGNORE = -100
"""The target of a position that is not scored (padding, later sub-words): PyTorch's ignore_index."""


def weights_digest(module: nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(_raw_bytes(tensor))
    return digest.hexdigest()[:16]


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of each tensor's name, dtype, shape and bytes: stored in a cache entry, checked on read."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(f"{name}|{tensors[name].dtype}|{tuple(tensors[name].shape)}".encode())
        digest.update(_raw_bytes(tensors[name]))
    return digest.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def cache_key(weights: str, preprocess, data) -> str:
    text = f"{weights}|{preprocess}|{data.fingerprint()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def to_device(inputs: Any, device: torch.device) -> Any:
    """A tensor, or every tensor inside dicts and lists (token ids, images with their boxes), on `device`."""
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, list | tuple):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs.to(device, non_blocking=True)


def to_cpu(outputs: Any) -> Any:
    """Model outputs (a tensor, or dicts and lists of them: detections) on the CPU; floating
    tensors as float32 (mixed precision gives bf16/fp16)."""
    if isinstance(outputs, dict):
        return {k: to_cpu(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(to_cpu(v) for v in outputs)
    return outputs.detach().float().cpu() if outputs.is_floating_point() else outputs.detach().cpu()


CHUNK_SIZES = (4, 8, 16, 32, 64)
"""The examples per backbone call a feature pass on a CPU may use (ChunkSize measures which is fastest).
On a CPU the per-example time depends on the call's batch through the caches, and no one size suits every
model: on 2 cores (bench/feature_chunks.py), ResNet-50 at 224 px ran fastest in calls of 4,
EfficientNet-Lite0 at 96 px of 8, MiniLM and a small Keras CNN of 32, and calls of 64 were up to 2.5x
slower than the best."""


class ChunkSize:
    """How many examples each backbone call of a feature pass takes: the whole loader batch on an
    accelerator; on a CPU, the fastest per example of CHUNK_SIZES (those at most half a batch), found by
    climbing: the middle size on one batch, then an untried neighbour of the fastest so far on each next
    batch (the smaller first), until the fastest has none left. Every batch is real work: trying costs
    only the slower calls."""

    def __init__(self, device: torch.device, batch_size: int | None) -> None:
        self.sizes = [size for size in CHUNK_SIZES if 2 * size <= (batch_size or 0)] if device.type == "cpu" else []
        self.per_example: dict[int, float] = {}
        self.trying: int | None = self.sizes[len(self.sizes) // 2] if self.sizes else None

    def next(self, examples: int) -> int:
        """The chunk size for a batch of `examples`."""
        if self.trying is not None and 2 * self.trying <= examples:
            return self.trying
        return self.fastest() or examples

    def fastest(self) -> int | None:
        return min(self.per_example, key=self.per_example.__getitem__) if self.per_example else None

    def measured(self, size: int, seconds: list[float]) -> None:
        """The calls' seconds of a batch run in chunks of `size`; the first call of a new shape, which sets
        up its kernels, is left out."""
        if size != self.trying or len(seconds) < 2:  # not a trial (a trial makes two calls at least)
            return
        self.per_example[size] = sorted(seconds[1:])[len(seconds[1:]) // 2] / size
        at = self.sizes.index(self.fastest() or size)
        untried = [self.sizes[i] for i in (at - 1, at + 1)
                   if 0 <= i < len(self.sizes) and self.sizes[i] not in self.per_example]
        self.trying = untried[0] if untried else None


def _chunked(backbone: nn.Module, inputs: Any, chunks: ChunkSize) -> torch.Tensor:
    """`backbone` over `inputs` (a tensor, or a dict of tensors: token ids), in calls of the size `chunks`
    picks; the outputs joined on the batch dimension, as float32."""
    tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
    if not all(isinstance(t, torch.Tensor) for t in tensors):  # no batch to split: one call
        return backbone(inputs).float()
    examples = len(next(iter(tensors)))
    size = chunks.next(examples)
    outputs, seconds = [], []
    for start in range(0, examples, size):
        part = {k: v[start:start + size] for k, v in inputs.items()} if isinstance(inputs, dict) \
            else inputs[start:start + size]
        began = time.perf_counter()
        outputs.append(backbone(part).float())
        seconds.append(time.perf_counter() - began)
    chunks.measured(size, seconds)
    return torch.cat(outputs)


@torch.inference_mode()
def extract_features(backbone: nn.Module, loader: DataLoader, device: torch.device,
                     desc: str = "features") -> dict[str, torch.Tensor]:
    """Run the backbone once over an in-order loader (on a CPU, in calls of the fastest size: ChunkSize).

    Shape: returns features (M, F) float32, targets (M,) and lengths (N,): pooled outputs
    (B, F) give one row per example; token outputs (B, T, F) one row per position whose
    target is not IGNORE.
    """
    was_training = backbone.training
    backbone.eval()
    features, targets, lengths = [], [], []
    chunks = ChunkSize(device, loader.batch_size)
    try:
        for inputs, target in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                out = _chunked(backbone, to_device(inputs, device), chunks).cpu()
            if out.ndim == 3:  # token features: keep the scored positions
                keep = target != IGNORE
                features.append(out[keep])
                targets.append(target[keep])
                lengths.append(keep.sum(1))
            else:
                features.append(out)
                targets.append(torch.as_tensor(target))
                lengths.append(torch.ones(len(out), dtype=torch.long))
    finally:
        backbone.train(was_training)
    return {"features": torch.cat(features), "targets": torch.cat(targets), "lengths": torch.cat(lengths)}


def cached_features(backbone: nn.Module, loader: DataLoader, device: torch.device, key: str | None,
                    cache_dir: Path | None, desc: str = "features") -> dict[str, torch.Tensor]:
    """`extract_features`, read from `cache_dir/<key>.safetensors` when seen before, written
    there otherwise. A None `cache_dir` disables the disk cache."""
    if cache_dir is None or key is None:
        return extract_features(backbone, loader, device, desc)
    path = Path(cache_dir) / f"{key}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):  # a shared cache that others fill: read it (checksummed), write nothing
        stored = read_entry(path) if path.exists() else None
        return stored if stored is not None else extract_features(backbone, loader, device, desc)
    remove_stale_temporaries(path.parent)
    lock = entry_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:  # it would look like a hang: say why
        log.info("%s: waiting for another process that is extracting the same features (%s)", desc, path)
        lock.acquire()
    try:
        stored = read_entry(path) if path.exists() else None
        if stored is None:
            stored = extract_features(backbone, loader, device, desc)
            write_atomic(path, lambda tmp: save_file(stored, tmp, metadata={"sha256": checksum(stored)}))
    finally:
        lock.release()
    return stored


def entry_lock(path: Path) -> FileLock:
    """The lock its writer holds from extraction to rename; the kernel releases it when a writer dies."""
    return FileLock(path.with_name(f".{path.stem}.lock"))


def read_entry(path: Path) -> dict[str, torch.Tensor] | None:
    """The entry's tensors; None, with a warning naming the file, when it cannot be read or its
    checksum does not match (a disk that filled up, a crash before the data reached the disk, an
    edit): the caller extracts again and replaces it."""
    try:
        with safe_open(str(path), "pt") as entry:
            stored = {name: entry.get_tensor(name) for name in entry.keys()}  # noqa: SIM118 (not a dict)
            expected = (entry.metadata() or {}).get("sha256")
    except (SafetensorError, OSError) as err:
        problem = one_line(err)
    else:
        if expected == checksum(stored):
            return stored
        if expected is None:
            log.info("%s was written without a checksum, by an earlier tunewise: extracting again", path)
            return None
        problem = "its checksum does not match its contents"
    log.warning("the feature cache entry %s is damaged (%s): extracting the features again", path, problem)
    return None


def remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete what writers that died mid-write (kill -9, power loss) left: a writer holds its
    entry's lock while its temporary file exists, so a temporary file whose lock is free is stale."""
    for tmp in cache_dir.glob(".*.safetensors.*.tmp"):
        entry = cache_dir / (tmp.name[1:].split(".safetensors.")[0] + ".safetensors")
        with suppress(Timeout), entry_lock(entry).acquire(timeout=0):  # a Timeout: its writer is at work
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by a feature extraction that was killed", tmp)


class TokenFeatures(Dataset):
    """Cached token features regrouped by example: item i is (features (n_i, F), targets (n_i,))."""

    def __init__(self, stored: dict[str, torch.Tensor]) -> None:
        self.features, self.targets = stored["features"], stored["targets"]
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), stored["lengths"].cumsum(0)]).tolist()

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int):
        a, b = self.starts[i], self.starts[i + 1]
        return self.features[a:b], self.targets[a:b]


def pad_token_batch(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape: items of ((n_i, F), (n_i,)) -> (B, max n, F) zeros-padded, (B, max n) IGNORE-padded."""
    features, targets = zip(*items, strict=True)
    return (pad_sequence(list(features), batch_first=True),
            pad_sequence(list(targets), batch_first=True, padding_value=IGNORE))


def feature_loader(stored: dict[str, torch.Tensor], batch_size: int, shuffle: bool) -> DataLoader:
    """Batches of cached features: rows for pooled features, padded examples for token features."""
    if bool((stored["lengths"] == 1).all()) and len(stored["lengths"]) == len(stored["targets"]):
        return DataLoader(TensorDataset(stored["features"], stored["targets"]), batch_size=batch_size,
                          shuffle=shuffle)
    return DataLoader(TokenFeatures(stored), batch_size=batch_size, shuffle=shuffle, collate_fn=pad_token_batch)
