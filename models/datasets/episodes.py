"""Few-shot episodes: N-way K-shot tasks with Q queries per class, sampled reproducibly from a
meta-dataset split and binned into frames with a model's input geometry (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spikeshot.events.binning import FrameGeometry, bin_batch
from spikeshot.models.datasets.base import MetaSplit


@dataclass(frozen=True)
class Task:
    """One episode. Frames are [N*K or N*Q, T, 2, H, W] float32, grouped by label (all of label 0
    first); labels are int64 in 0..ways-1; ``class_names[label]`` is the split's name of a label;
    ``sources`` holds, support examples first, the source recordings each example is made of."""

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    class_names: list[str]
    sources: list[tuple]

    @property
    def ways(self) -> int:
        return len(self.class_names)


def choose_classes(
    split: MetaSplit, ways: int, rng: np.random.Generator, within_group: bool = False
) -> np.ndarray:
    """``ways`` distinct class indices of ``split`` in random order; with ``within_group``, all
    from one group (drawn uniformly among the groups that have ``ways`` classes)."""
    if not within_group:
        if ways > len(split):
            raise ValueError(f"ways={ways} exceeds the {len(split)} classes of this split")
        return rng.choice(len(split), size=ways, replace=False)
    if split.groups is None:
        raise ValueError(
            "this split's classes have no groups (scripts): within-group tasks need them"
        )
    members: dict[str, list[int]] = {}
    for i, g in enumerate(split.groups):
        members.setdefault(g, []).append(i)
    eligible = sorted(g for g, m in members.items() if len(m) >= ways)
    if not eligible:
        largest = max(len(m) for m in members.values())
        raise ValueError(
            f"ways={ways} exceeds every group of this split (the largest has {largest})"
        )
    group = members[eligible[rng.integers(len(eligible))]]
    return np.asarray(group)[rng.choice(len(group), size=ways, replace=False)]


def sample_task(
    split: MetaSplit,
    ways: int,
    shots: int,
    queries: int,
    geometry: FrameGeometry,
    rng: np.random.Generator,
    within_group: bool = False,
) -> Task:
    """Draw ``ways`` distinct classes of ``split`` (``choose_classes``; label i is the i-th drawn),
    then ``shots`` support and ``queries`` query recordings of each, all distinct (a query is never
    a support recording), binned with ``geometry``."""
    if ways < 1 or shots < 1 or queries < 0:
        raise ValueError(
            f"need ways >= 1, shots >= 1, queries >= 0; got ways={ways}, shots={shots}, "
            f"queries={queries}"
        )
    sensor = (split.sensor.width, split.sensor.height)
    if (geometry.sensor_width, geometry.sensor_height) != sensor:
        raise ValueError(
            f"geometry is for a {geometry.sensor_width}x{geometry.sensor_height} sensor, "
            f"the split's recordings are {sensor[0]}x{sensor[1]}"
        )
    chosen = choose_classes(split, ways, rng, within_group)
    per_class = shots + queries
    drawn = [split.draw(int(c), per_class, rng) for c in chosen]
    frames = bin_batch([r.events for rs in drawn for r in rs], geometry, dtype=np.float32)
    frames = frames.reshape(ways, per_class, *frames.shape[1:])
    labels = np.repeat(np.arange(ways, dtype=np.int64), per_class).reshape(ways, per_class)
    return Task(
        support=frames[:, :shots].reshape(ways * shots, *frames.shape[2:]),
        support_labels=labels[:, :shots].reshape(-1),
        query=frames[:, shots:].reshape(ways * queries, *frames.shape[2:]),
        query_labels=labels[:, shots:].reshape(-1),
        class_names=[split.classes[int(c)] for c in chosen],
        sources=[r.sources for rs in drawn for r in rs[:shots]]
        + [r.sources for rs in drawn for r in rs[shots:]],
    )


def rotate_classes(task: Task, turns: np.ndarray) -> Task:
    """``task`` with the frames of label i turned by ``turns[i]`` quarter turns (counter-clockwise
    in (height, width)): a class turned is a class of its own, which multiplies a split's classes
    by four (the Omniglot augmentation of Santoro et al. 2016, as MAML trained on it). A class's
    name records its turn, ``name@90``."""

    def turned(frames, labels):
        out = frames.copy()
        for label, k in enumerate(turns):
            if k:
                out[labels == label] = np.rot90(frames[labels == label], int(k), axes=(-2, -1))
        return out

    return replace(
        task,
        support=turned(task.support, task.support_labels),
        query=turned(task.query, task.query_labels),
        class_names=[
            f"{n}@{90 * k}" if k else n for n, k in zip(task.class_names, turns, strict=True)
        ],
    )


class TaskSampler:
    """Tasks from one split where task ``i`` depends only on ``(seed, i)``: a resumed run sees the
    same tasks as an uninterrupted one. ``sampler[i]`` is task i; iterating yields tasks 0, 1, ...
    without end.

    With ``max_ways``, each task's ways are drawn uniformly from ``ways..max_ways``; each task is
    within one group with probability ``within_group`` (a bool is 0 or 1). With ``rotate``, each
    class of a task is turned by its own random multiple of 90 degrees, all its recordings in the
    task alike (``rotate_classes``; square frames only).
    """

    def __init__(
        self,
        split: MetaSplit,
        ways: int,
        shots: int,
        queries: int,
        geometry: FrameGeometry,
        seed: int,
        within_group: float = False,
        max_ways: int | None = None,
        rotate: bool = False,
    ):
        if max_ways is not None and max_ways < ways:
            raise ValueError(f"max_ways ({max_ways}) must be >= ways ({ways})")
        if not 0 <= within_group <= 1:
            raise ValueError(f"within_group must be in [0, 1], got {within_group}")
        if rotate and geometry.height != geometry.width:
            raise ValueError(
                "rotating classes needs square frames, this geometry's are "
                f"{geometry.height}x{geometry.width}"
            )
        self.split, self.ways, self.shots, self.queries = split, ways, shots, queries
        self.geometry, self.seed, self.within_group = geometry, seed, float(within_group)
        self.max_ways = ways if max_ways is None else max_ways
        self.rotate = rotate

    def __getitem__(self, i: int) -> Task:
        if i < 0:
            raise IndexError(f"task index must be >= 0, got {i}")
        rng = np.random.default_rng([self.seed, i])
        ways, within = self.ways, self.within_group == 1
        if self.max_ways != self.ways or 0 < self.within_group < 1:
            ways = int(rng.integers(self.ways, self.max_ways, endpoint=True))
            within = bool(rng.random() < self.within_group)
        task = sample_task(self.split, ways, self.shots, self.queries, self.geometry, rng, within)
        return rotate_classes(task, rng.integers(4, size=ways)) if self.rotate else task

    def __iter__(self):
        i = 0
        while True:
            yield self[i]
            i += 1
