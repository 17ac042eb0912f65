"""What an epoch draws, from (seed, epoch) alone, so that a killed run resumes to the same weights.

The loop seeds every generator at each epoch's start (`seed_all(epoch_seed(seed, epoch))`): what the
main process draws (shuffles, dropout) then depends on nothing before the epoch. Loader workers draw
augmentations in processes of their own, whose generators a persistent worker carries from epoch to
epoch and a checkpoint cannot hold. So batches of images are shuffled by `EpochShuffle`, which hands
each example a seed of its own with its index, and `Seeded` draws the example under that seed: the
workers stay alive between epochs (no start-up per epoch) and draw the same in a resumed run, with any
number of workers, as in an uninterrupted one. `image_loader` builds such loaders (and keeps their
workers quiet when a run is stopped).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tunewise.config import TrainConfig


def epoch_seed(seed: int, epoch: int) -> int:
    """One 32-bit seed per (seed, epoch), mixed: `seed + epoch` would give seed 1's first epoch the
    draws of seed 0's second, and a search compares seeds."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's generators (every CUDA device's too), from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochShuffle(Sampler[tuple[int, int]]):
    """A shuffle of range(size) per epoch, each index with a seed for its example: keys (seed, index)
    for `Seeded`. The loop sets the epoch before iterating (`set_epoch`), as for DistributedSampler."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draw = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=draw).tolist()
        seeds = torch.randint(2**32, (self.size,), generator=draw).tolist()
        return zip(seeds, order, strict=True)


class Seeded(Dataset):
    """Item (seed, i) is `data[i]` drawn with Python's, numpy's and torch's CPU generators seeded by
    `seed`. Torch's is restored after: without workers it is the training loop's, whose dropout must
    not depend on how many workers there are (saving numpy's state too would cost 20 times the
    seeding; nothing in the loop draws from it or from Python's)."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]  # torch types Dataset without a length

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        loop_state = torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return self.data[index]
        finally:
            torch.set_rng_state(loop_state)


def image_loader(data: Dataset, train: TrainConfig, training: bool, **options: Any) -> DataLoader:
    """Batches of one split of images: in order, or (`training`) shuffled and augmented per epoch by
    (train.seed, epoch) alone; workers persist across epochs. `options`: DataLoader's (collate_fn, ...)."""
    keys: dict[str, Any] = {"dataset": data}
    if training:
        keys = {"dataset": Seeded(data), "sampler": EpochShuffle(len(data), train.seed)}  # type: ignore[arg-type]
    # a generator of its own: starting an iterator draws its workers' base seed from it, where it drew
    # from the global one that the training loop's model draws from (detection's box sampling,
    # dropout), once per run with persistent workers, so a resumed run drew one more
    workers = loader_workers(train)
    return DataLoader(**keys, batch_size=train.batch_size, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=quiet_on_stop,
                      generator=torch.Generator().manual_seed(train.seed), **options)


def loader_workers(train: TrainConfig) -> int:
    """`train.num_workers`, or by default 2, except on a machine without a GPU that lets this process use
    at most 2 cores: there a worker decodes on a core the training computes on, and none was faster
    (bench/loader_workers.py). Larger CPU machines keep 2: not measured."""
    if train.num_workers is not None:
        return train.num_workers
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else 2


def quiet_on_stop(worker_id: int) -> None:
    """In a loader worker, a stop (Ctrl-C, SIGTERM) leaves no traceback. A SIGTERM sent to the whole
    process group (systemd, Slurm) ends the worker as Ctrl-C does, quietly, where torch's own handler
    would let it die by the signal and the main process report a failed worker. And a batch being
    handed over as the main process stops leaves multiprocessing's sharing thread here without its
    peer, which it prints as a traceback (pytorch#28950): only that loss is kept quiet; the worker's
    own errors reach the main process through its queue, not through this hook. A worker that was
    told to stop says nothing more: the KeyboardInterrupt of a signal landing outside torch's worker
    loop (its shutdown, seen in CI) would be printed as a traceback by multiprocessing."""
    def stop(number: int, frame: object) -> None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (the process is ending)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    shown = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if not issubclass(kind, ConnectionError | EOFError):
            shown(kind, value, traceback)

    sys.excepthook = hook


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Which epoch `loader` draws, where it shuffles with `EpochShuffle` (under accelerate, its
    wrapper's set_epoch passes it on); other loaders draw from the generators `seed_all` seeded."""
    target = loader if hasattr(loader, "set_epoch") else loader.sampler
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)
