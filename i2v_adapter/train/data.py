"""Samples by number: every random choice of a sample follows from (seed, sample number).

Sample n of a run is the same clip, start frame, timestep, noise and caption dropout however many
processes or workers there are and whether the run was resumed: micro-batch m of process r holds the
numbers ``(m * processes + r) * batch + i``. So two processes with batch B see exactly what one process
with batch 2B sees, and a resumed run continues the uninterrupted run's sample stream.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .clips import Clip
from .decode import UnusableClip, read_clip

# How many other videos a sample tries when its video is unusable, before the run stops.
MAX_ATTEMPTS = 50


def sample_rng(seed: int, sample_number: int, purpose: int) -> np.random.Generator:
    """An independent random stream per (seed, sample, purpose); ``purpose`` keeps data and noise apart."""
    return np.random.default_rng([seed, sample_number, purpose])


class ClipSamples(Dataset):
    """``dataset[n]``: sample number n as ``{"pixels", "caption", "sample", "skipped"}``.

    Each epoch visits the clips in a seeded order. An unusable video is replaced by the next one in the
    list and reported in ``skipped`` as ``(path, reason)``, for the main process to count.
    """

    def __init__(self, clips: list[Clip], frames: int, stride: int, resolution: int, seed: int, decoder: str):
        if not clips:
            raise ValueError("no clips to train on")
        self.clips, self.frames, self.stride, self.resolution = clips, frames, stride, resolution
        self.seed, self.decoder = seed, decoder
        self._order_epoch, self._order = None, None

    def __len__(self) -> int:
        return len(self.clips)

    def _clip_index(self, sample_number: int) -> int:
        epoch, position = divmod(sample_number, len(self.clips))
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
            self._order_epoch = epoch
        return int(self._order[position])

    def __getitem__(self, sample_number: int) -> dict:
        first = self._clip_index(sample_number)
        skipped = []
        for attempt in range(min(MAX_ATTEMPTS, len(self.clips))):
            clip = self.clips[(first + attempt) % len(self.clips)]
            rng = sample_rng(self.seed, sample_number, 0)
            try:
                frames = read_clip(clip.path, self.frames, self.stride, self.resolution, rng, self.decoder)
            except UnusableClip as problem:
                skipped.append((clip.path, str(problem)))
                continue
            return {"pixels": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),  # (F, 3, R, R) uint8
                    "caption": clip.caption, "sample": sample_number, "skipped": skipped}
        raise ValueError(f"sample {sample_number}: {len(skipped)} videos in a row are unusable, last: "
                         f"{skipped[-1][0]} ({skipped[-1][1]})")


def require_a_usable_clip(clips: list[Clip], frames: int, stride: int, resolution: int, decoder: str) -> None:
    """Stop before loading any model when no video can give a clip (usually the first one can: one decode)."""
    problems = []
    for clip in clips:
        try:
            read_clip(clip.path, frames, stride, resolution, np.random.default_rng(0), decoder)
            return
        except UnusableClip as problem:
            problems.append(f"{clip.path} ({problem})")
    raise ValueError(f"none of the {len(clips)} videos gives a clip of {frames} frames at stride {stride}; "
                     f"first: {problems[0]}")


def collate_samples(items: list[dict]) -> dict:
    return {
        "pixels": torch.stack([item["pixels"] for item in items]),
        "captions": [item["caption"] for item in items],
        "samples": torch.tensor([item["sample"] for item in items], dtype=torch.long),
        "skipped": [entry for item in items for entry in item["skipped"]],
    }


class ProcessSampleNumbers(Sampler):
    """The sample numbers of one process for micro-batches ``first .. first + count - 1``."""

    def __init__(self, batch_size: int, processes: int, rank: int, first_micro_batch: int, micro_batches: int):
        self.batch_size, self.processes, self.rank = batch_size, processes, rank
        self.first, self.count = first_micro_batch, micro_batches

    def __iter__(self):
        for micro in range(self.first, self.first + self.count):
            start = (micro * self.processes + self.rank) * self.batch_size
            yield from range(start, start + self.batch_size)

    def __len__(self) -> int:
        return self.count * self.batch_size


def sample_loader(dataset: ClipSamples, batch_size: int, processes: int, rank: int, first_micro_batch: int,
                  micro_batches: int, workers: int) -> DataLoader:
    sampler = ProcessSampleNumbers(batch_size, processes, rank, first_micro_batch, micro_batches)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_samples, persistent_workers=False,
                      prefetch_factor=2 if workers else None)
