"""Few-shot episodes: shapes and labels, reproducible task streams, Double Digits end to end."""

import itertools

import numpy as np
import pytest

from spikeshot.events.array import make_events
from spikeshot.events.binning import FrameGeometry
from spikeshot.models.datasets.base import MetaSplit, Sensor
from spikeshot.models.datasets.double_digits import DoubleDigits
from spikeshot.models.datasets.episodes import Task, TaskSampler, sample_task

GEOMETRY = FrameGeometry(sensor_width=8, sensor_height=4, bins=2, window_us=1000)


class ColumnSplit(MetaSplit):
    """Class c's recordings light column c: one event per row drawn from ``rng``, 3 to 6 of them."""

    sensor = Sensor(8, 4)

    def __init__(self, n_classes=7):
        self.classes = [f"class{c}" for c in range(n_classes)]

    def sample(self, class_index, rng):
        n = int(rng.integers(3, 7))
        t = np.sort(rng.integers(0, 1000, n))
        return make_events(t, np.full(n, class_index), rng.integers(0, 4, n), rng.integers(0, 2, n))


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
    data = DoubleDigits(tmp_path, images_per_digit=2, progress=False)
    geometry = FrameGeometry(
        sensor_width=64, sensor_height=32, downsample=2, bins=10, window_us=100_000
    )
    task = TaskSampler(data.split("test"), 5, 1, 2, geometry, seed=0)[0]
    assert task.support.shape == (5, 10, 2, 16, 32)
    assert task.query.shape == (10, 10, 2, 16, 32)
    assert set(task.class_names) <= set(data.class_splits["test"])
    # Both digits of every example are seen: events in the left and the right half of the frame.
    both = np.concatenate([task.support, task.query])
    assert (both[..., :16].sum(axis=(1, 2, 3, 4)) > 100).all()
    assert (both[..., 16:].sum(axis=(1, 2, 3, 4)) > 100).all()
