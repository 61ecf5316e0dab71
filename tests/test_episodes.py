"""Few-shot episodes: shapes and labels, reproducible task streams, Double Digits end to end."""

import itertools

import numpy as np
import pytest

from spikeshot.events.array import make_events
from spikeshot.events.binning import FrameGeometry
from spikeshot.models.datasets.base import MetaSplit, Recording, Sensor, distinct
from spikeshot.models.datasets.double_digits import DoubleDigits
from spikeshot.models.datasets.episodes import Task, TaskSampler, sample_task

GEOMETRY = FrameGeometry(sensor_width=8, sensor_height=4, bins=2, window_us=1000)


class ColumnSplit(MetaSplit):
    """Class c's recordings light column c: instance i has 3 + i % 4 events, from a generator
    seeded by (c, i); classes fall into groups of three ("g0": classes 0-2, ...)."""

    sensor = Sensor(8, 4)

    def __init__(self, n_classes=7, instances=20):
        self.classes = [f"class{c}" for c in range(n_classes)]
        self.groups = [f"g{c // 3}" for c in range(n_classes)]
        self.instances = instances

    def draw(self, class_index, count, rng):
        picks = distinct(self.instances, count, rng, f"class{class_index}")
        return [
            Recording(self.recording(class_index, int(i)), ((class_index, int(i)),)) for i in picks
        ]

    def recording(self, c, i):
        rng = np.random.default_rng([c, i])
        n = 3 + i % 4
        t = np.sort(rng.integers(0, 1000, n))
        return make_events(t, np.full(n, c), rng.integers(0, 4, n), rng.integers(0, 2, n))


def lit_column(frames):
    """The one column each recording's frames have events in."""
    cols = frames.sum(axis=(1, 2, 3))
    assert ((cols > 0).sum(axis=1) == 1).all()
    return cols.argmax(axis=1)


def test_task_shapes_labels_and_classes():
    split = ColumnSplit()
    task = sample_task(split, 5, 2, 3, GEOMETRY, np.random.default_rng(0))
    assert isinstance(task, Task) and task.ways == 5
    assert task.support.shape == (10, 2, 2, 4, 8) and task.support.dtype == np.float32
    assert task.query.shape == (15, 2, 2, 4, 8) and task.query.dtype == np.float32
    assert task.support_labels.dtype == np.int64 and task.query_labels.dtype == np.int64
    np.testing.assert_array_equal(task.support_labels, np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(task.query_labels, np.repeat(np.arange(5), 3))
    assert len(set(task.class_names)) == 5 and set(task.class_names) <= set(split.classes)
    # Every example of label i is a recording of class_names[i].
    index = {name: i for i, name in enumerate(split.classes)}
    for frames, labels in ((task.support, task.support_labels), (task.query, task.query_labels)):
        expected = [index[task.class_names[label]] for label in labels]
        np.testing.assert_array_equal(lit_column(frames), expected)
        assert (frames.sum(axis=(1, 2, 3, 4)) >= 3).all()


def test_labels_follow_a_random_order_of_classes():
    split = ColumnSplit()
    orders = {
        tuple(sample_task(split, 3, 1, 1, GEOMETRY, np.random.default_rng(s)).class_names)
        for s in range(30)
    }
    assert len(orders) > 10
    assert any(list(o) != sorted(o) for o in orders)


@pytest.mark.parametrize("shots", [1, 5])
def test_no_recording_appears_twice_in_a_task(shots):
    split = ColumnSplit(instances=shots + 10)  # exactly enough: every instance is used
    for seed in range(20):
        task = sample_task(split, 5, shots, 10, GEOMETRY, np.random.default_rng(seed))
        assert len(task.sources) == 5 * (shots + 10)
        assert len(set(task.sources)) == len(task.sources)
        # The sources are what the frames hold, in order: support first, grouped by label.
        index = {name: i for i, name in enumerate(split.classes)}
        frames = np.concatenate([task.support, task.query])
        labels = np.concatenate([task.support_labels, task.query_labels])
        for f, label, ((c, i),) in zip(frames, labels, task.sources, strict=True):
            assert c == index[task.class_names[label]]
            assert f.sum() == 3 + i % 4


def test_a_class_with_too_few_recordings_is_a_clear_error():
    split = ColumnSplit(instances=10)
    with pytest.raises(ValueError, match=r"class\d has 10 recordings, fewer than the 11 distinct"):
        sample_task(split, 7, 1, 10, GEOMETRY, np.random.default_rng(0))


def test_within_group_tasks_draw_every_class_from_one_group():
    split = ColumnSplit(n_classes=9)
    seen = set()
    for seed in range(30):
        task = sample_task(split, 3, 1, 1, GEOMETRY, np.random.default_rng(seed), within_group=True)
        groups = {split.groups[split.classes.index(c)] for c in task.class_names}
        assert len(groups) == 1
        seen |= groups
    assert seen == {"g0", "g1", "g2"}
    mixed = [sample_task(split, 3, 1, 1, GEOMETRY, np.random.default_rng(s)) for s in range(30)]
    group_counts = [
        len({split.groups[split.classes.index(c)] for c in t.class_names}) for t in mixed
    ]
    assert max(group_counts) > 1
    with pytest.raises(ValueError, match="ways=4 exceeds every group of this split"):
        sample_task(split, 4, 1, 1, GEOMETRY, np.random.default_rng(0), within_group=True)
    split.groups = None
    with pytest.raises(ValueError, match="no groups"):
        sample_task(split, 3, 1, 1, GEOMETRY, np.random.default_rng(0), within_group=True)


def test_zero_queries_and_bad_arguments():
    split = ColumnSplit()
    task = sample_task(split, 2, 1, 0, GEOMETRY, np.random.default_rng(0))
    assert task.query.shape == (0, 2, 2, 4, 8) and task.query_labels.shape == (0,)
    with pytest.raises(ValueError, match="exceeds the 7 classes"):
        sample_task(split, 8, 1, 1, GEOMETRY, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shots >= 1"):
        sample_task(split, 2, 0, 1, GEOMETRY, np.random.default_rng(0))
    other = FrameGeometry(sensor_width=64, sensor_height=32, bins=2, window_us=1000)
    with pytest.raises(ValueError, match="64x32 sensor"):
        sample_task(split, 2, 1, 1, other, np.random.default_rng(0))


def assert_same_task(a: Task, b: Task):
    assert a.class_names == b.class_names
    for field in ("support", "support_labels", "query", "query_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_sampler_task_depends_only_on_seed_and_index():
    split = ColumnSplit()
    straight = TaskSampler(split, 3, 1, 2, GEOMETRY, seed=11)
    first_six = list(itertools.islice(straight, 6))
    resumed = TaskSampler(split, 3, 1, 2, GEOMETRY, seed=11)
    assert_same_task(resumed[5], first_six[5])
    assert_same_task(resumed[2], first_six[2])
    other = TaskSampler(split, 3, 1, 2, GEOMETRY, seed=12)
    differs = [
        not np.array_equal(other[i].support, first_six[i].support)
        or other[i].class_names != first_six[i].class_names
        for i in range(6)
    ]
    assert all(differs)
    assert not np.array_equal(first_six[0].support, first_six[1].support)
    with pytest.raises(IndexError):
        straight[-1]


def test_double_digits_task_on_the_model_geometry(tmp_path):
    # 8 images per digit: 4 held out, enough for a class "dd" (two distinct recordings of d per
    # example, two examples).
    data = DoubleDigits(tmp_path, images_per_digit=8, progress=False)
    geometry = FrameGeometry(
        sensor_width=64, sensor_height=32, downsample=2, bins=10, window_us=100_000
    )
    task = TaskSampler(data.split("test"), 5, 1, 1, geometry, seed=0)[0]
    assert task.support.shape == (5, 10, 2, 16, 32)
    assert task.query.shape == (5, 10, 2, 16, 32)
    # Within a class, the four digit recordings of its two examples are distinct (two classes may
    # share a digit recording, as Double NMNIST's pairs do).
    labels = np.concatenate([task.support_labels, task.query_labels])
    for label in range(5):
        rows = [
            s
            for sources, lab in zip(task.sources, labels, strict=True)
            if lab == label
            for s in sources
        ]
        assert len(set(rows)) == 4
    assert set(task.class_names) <= set(data.class_splits["test"])
    # Both digits of every example are seen: events in the left and the right half of the frame.
    both = np.concatenate([task.support, task.query])
    assert (both[..., :16].sum(axis=(1, 2, 3, 4)) > 100).all()
    assert (both[..., 16:].sum(axis=(1, 2, 3, 4)) > 100).all()


def test_sampler_mixes_ways_and_within_group_tasks_reproducibly():
    split = ColumnSplit(n_classes=9)
    sampler = TaskSampler(split, 2, 1, 1, GEOMETRY, seed=4, within_group=0.5, max_ways=3)
    tasks = [sampler[i] for i in range(60)]
    assert {t.ways for t in tasks} == {2, 3}

    def one_group(t):
        return len({split.groups[split.classes.index(c)] for c in t.class_names}) == 1

    within = sum(one_group(t) for t in tasks)
    assert 20 < within < 50  # about half, plus mixed tasks that happen to share a group
    again = TaskSampler(split, 2, 1, 1, GEOMETRY, seed=4, within_group=0.5, max_ways=3)
    assert_same_task(again[17], tasks[17])
    with pytest.raises(ValueError, match="max_ways \\(1\\) must be >= ways \\(2\\)"):
        TaskSampler(split, 2, 1, 1, GEOMETRY, seed=4, max_ways=1)


class SquareSplit(ColumnSplit):
    """``ColumnSplit`` on a 4x4 sensor: class c lights column c."""

    sensor = Sensor(4, 4)


def test_rotated_classes_are_the_same_draws_turned_a_quarter_at_a_time():
    """With ``rotate`` each class's frames in a task are the unrotated task's turned by the
    multiple of 90 degrees its name records, every recording of the class alike; everything else
    (classes, recordings, labels) is the task without rotation, and all four turns occur."""
    split = SquareSplit(n_classes=4)
    square = FrameGeometry(sensor_width=4, sensor_height=4, bins=2, window_us=1000)
    plain = TaskSampler(split, 3, 2, 2, square, seed=5)
    turned = TaskSampler(split, 3, 2, 2, square, seed=5, rotate=True)
    turns = set()
    for i in range(24):
        a, b = plain[i], turned[i]
        assert a.sources == b.sources
        for frames_a, frames_b, labels in (
            (a.support, b.support, a.support_labels),
            (a.query, b.query, a.query_labels),
        ):
            for label, (name, name_turned) in enumerate(
                zip(a.class_names, b.class_names, strict=True)
            ):
                base, _, angle = name_turned.partition("@")
                k = int(angle or 0) // 90
                assert base == name
                turns.add(k)
                rows = labels == label
                np.testing.assert_array_equal(
                    frames_b[rows], np.rot90(frames_a[rows], k, axes=(-2, -1))
                )
    assert turns == {0, 1, 2, 3}
    assert_same_task(TaskSampler(split, 3, 2, 2, square, seed=5, rotate=True)[7], turned[7])
    with pytest.raises(ValueError, match="square frames, this geometry's are 4x8"):
        TaskSampler(ColumnSplit(), 3, 1, 1, GEOMETRY, seed=0, rotate=True)
