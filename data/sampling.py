"""Reproducible sampling for training: epoch order and per-sample randomness from seeds.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)``; every sample also
gets its own seed, from which the dataset's random choices (crop, flip, interval)
are drawn. Nothing depends on worker processes or on how many iterations ran
before, so a run resumed at any iteration sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_SEED_MODULUS = 2**63 - 1
logger = logging.getLogger(__name__)


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one rank's share of each epoch.

    The epoch's permutation of ``range(length)`` is padded (wrapping around) to a multiple
    of ``num_replicas`` and dealt out round-robin, as ``DistributedSampler``.
    ``set_epoch(epoch, start)`` selects the epoch and skips the first ``start`` samples
    of this rank (to resume in the middle of an epoch).
    """

    def __init__(self, length: int, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True):
        if length < 1:
            raise ValueError("the training dataset is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = math.ceil(length / num_replicas)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} is not in [0, {self.num_samples}]")
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_samples - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.num_samples * self.num_replicas
        order = (order * math.ceil(total / self.length))[:total]
        mine = order[self.rank :: self.num_replicas]
        for position in range(self.start, self.num_samples):
            global_position = position * self.num_replicas + self.rank
            yield mine[position], _mix(self.seed, self.epoch, global_position)


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` draws its randomness from ``seed``.

    Python's ``random``, numpy's global generator and torch's CPU generator are seeded for
    the call and restored afterwards, so the caller's generators are left untouched.

    ``skip_bad_samples``: a sample whose frames cannot be read (missing, corrupt, wrong size:
    the dataset raises) is replaced by the next index, with a warning naming the error and
    the number of samples this process skipped so far; after ``MAX_CONSECUTIVE_SKIPS``
    failures in a row the error is raised. Off by default: a bad frame stops the run.
    """

    MAX_CONSECUTIVE_SKIPS = 10

    def __init__(self, dataset: Dataset, skip_bad_samples: bool = False):
        self.dataset = dataset
        self.skip_bad_samples = skip_bad_samples
        self.skipped = 0  # per process (each DataLoader worker counts its own)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        attempt = 0
        while True:
            try:
                with seeded_generators(seed):
                    return self.dataset[(index + attempt) % len(self.dataset)]
            except (OSError, RuntimeError, ValueError) as error:  # StoreError is a DataError (ValueError)
                if not self.skip_bad_samples or attempt == self.MAX_CONSECUTIVE_SKIPS:
                    raise
                self.skipped += 1
                logger.warning("skipping bad training sample %d (%s); %d skipped so far in this process",
                               (index + attempt) % len(self.dataset), error, self.skipped)
                attempt += 1


@contextlib.contextmanager
def seeded_generators(seed: int):
    """Seed python/numpy/torch(CPU) generators inside the block; restore them after."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from integers (not Python's salted hash)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state % _SEED_MODULUS
