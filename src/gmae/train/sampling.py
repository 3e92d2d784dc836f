"""Reproducible data order and randomness, independent of workers, world size and resumes.

Everything random about a training sample is a pure function of ``(seed, epoch, index)``:
- the order: ``ResumableSampler`` (a ``DistributedSampler``, permutation seeded with
  ``seed + epoch``) can start mid-epoch by skipping the samples already seen;
- the augmentation and the mask noise: ``SeededSamples`` seeds a generator per sample.
So a resumed run sees exactly the batches an uninterrupted one would, and N processes with batch
B see the same global batches (as sets) as one process with batch N x B. The sampler yields
``(epoch, index)`` pairs, so the epoch reaches the workers with every index and persistent
workers (created once, at epoch 0) still augment each epoch differently.
"""

from __future__ import annotations

import itertools
import random
import signal
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    lo, hi = np.random.SeedSequence([seed, epoch, index]).generate_state(2)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


class SeededSamples(Dataset):
    """``(image, label, mask_noise)`` items with per-sample seeded augmentation and noise.

    ``base`` yields ``(PIL image, label)``; ``transform`` may use torch's global RNG (torchvision
    does): it runs under a forked RNG seeded for this sample, so it neither depends on nor
    disturbs the caller's RNG state. ``mask_noise`` ([num_patches] uniform) goes to the model's
    ``noise`` argument and fixes which patches are masked.
    """

    def __init__(self, base: Dataset, transform: Callable, num_patches: int, seed: int) -> None:
        self.base, self.transform = base, transform
        self.num_patches, self.seed = num_patches, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # for plain int indices; ResumableSampler passes (epoch, index)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int | tuple[int, int]):
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        image, label = self.base[index]
        gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (), generator=gen)))
            image = self.transform(image)
        noise = torch.rand(self.num_patches, generator=gen)
        return image, label, noise


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled with ``seed + epoch``, tail dropped) that can start at
    sample ``start`` of this rank's share of the epoch; yields ``(epoch, index)`` pairs."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in itertools.islice(super().__iter__(), self.start, None))

    def __len__(self) -> int:
        return self.num_samples - self.start


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    With persistent workers (the default) this runs once, when the loader starts (at the run's
    first epoch or at the resume), so numpy / ``random`` draws in a transform would not resume
    bit for bit; our transforms draw only from the per-sample torch generator, which does.
    Workers ignore Ctrl-C and SIGTERM, which a terminal or a scheduler (SLURM, ``kill --
    -PGID``) sends to the whole process group: the main process decides when to stop, saves
    last.pt and shuts them down (a worker whose parent dies exits by itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (the legacy global RNG is the one to seed)
    random.seed(seed)
