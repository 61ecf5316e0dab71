"""Double Digits (tiny configuration): classes, splits, image halves, pairing, the cache."""

from dataclasses import asdict

import numpy as np
import pytest
from sklearn.datasets import load_digits

from spikeshot.events.array import EVENT_DTYPE, is_sorted, make_events
from spikeshot.events.dvs_sim import record_saccades
from spikeshot.models.datasets import double_digits as dd
from spikeshot.models.datasets.base import MetaDataset, MetaSplit, Sensor
from spikeshot.models.datasets.pairs import crop_events, pair_side_by_side

PER_DIGIT = 4  # 2 held out per digit


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(cache_dir):
    return dd.DoubleDigits(cache_dir, seed=3, images_per_digit=PER_DIGIT, progress=False)


def test_class_splits_are_disjoint_64_16_20(data):
    splits = {name: data.split(name).classes for name in ("train", "val", "test")}
    assert [len(splits[n]) for n in ("train", "val", "test")] == [64, 16, 20]
    union = set(splits["train"]) | set(splits["val"]) | set(splits["test"])
    assert union == {f"{a}{b}" for a in range(10) for b in range(10)}
    assert dd.class_splits(3) == data.class_splits
    assert dd.class_splits(4) != data.class_splits
    assert isinstance(data, MetaDataset) and isinstance(data.split("val"), MetaSplit)
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("validation")


def test_image_halves_are_disjoint_and_cover_every_digit(data):
    rec = data.recordings
    assert len(rec) == 10 * PER_DIGIT
    np.testing.assert_array_equal(np.bincount(rec.labels), [PER_DIGIT] * 10)
    train, held = data.image_halves["train"], data.image_halves["heldout"]
    assert not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(len(rec)))
    assert not set(rec.image_index[train]) & set(rec.image_index[held])
    for name, half in (("train", train), ("val", held), ("test", held)):
        pools = data.split(name).pools
        for d in range(10):
            assert len(pools[d]) == PER_DIGIT // 2
            assert set(pools[d]) <= set(half)
            assert (rec.labels[pools[d]] == d).all()


def test_sample_pairs_the_class_digits_side_by_side(data):
    split = data.split("val")
    assert split.sensor == Sensor(64, 32)
    for ci in (0, 7, 15):
        a, b = (int(c) for c in split.classes[ci])
        ((ev, (ia, ib)),) = split.draw(ci, 1, np.random.default_rng(ci))
        assert data.recordings.labels[ia] == a and data.recordings.labels[ib] == b
        assert ia in split.pools[a] and ib in split.pools[b] and ia != ib
        expected = pair_side_by_side(data.recordings[ia], data.recordings[ib], 32, offset=1)
        np.testing.assert_array_equal(ev, expected)
        assert ev.dtype == EVENT_DTYPE and is_sorted(ev)
        assert ev["x"].max() < 64 and ev["y"].max() < 32
        left = ev[ev["x"] < 32]
        assert 0.3 < len(left) / len(ev) < 0.7
        np.testing.assert_array_equal(left, crop_events(data.recordings[ia], 32, 1))
    with pytest.raises(IndexError, match="class_index"):
        split.draw(16, 1, np.random.default_rng(0))
    same = split.classes.index(next(c for c in split.classes if c[0] == c[1]))
    both = split.draw(same, 1, np.random.default_rng(0))[0].sources
    assert len(set(both)) == 2  # a class of one digit pairs two distinct recordings of it
    name = split.classes[same]
    with pytest.raises(ValueError, match=f"class '{name}' has 2 recordings, fewer than the 4"):
        split.draw(same, 2, np.random.default_rng(0))


def test_pair_side_by_side_crops_shifts_and_merges():
    left = make_events([0, 10, 20], [0, 1, 33], [0, 1, 33], [1, 0, 1])
    right = make_events([5, 10, 30], [1, 32, 2], [5, 32, 33], [0, 1, 1])
    out = pair_side_by_side(left, right, 32, offset=1)
    np.testing.assert_array_equal(out["t"], [5, 10, 10])
    np.testing.assert_array_equal(out["x"], [32, 0, 63])
    np.testing.assert_array_equal(out["y"], [4, 0, 31])
    np.testing.assert_array_equal(out["p"], [0, 0, 1])
    with pytest.raises(ValueError, match="left_events"):
        pair_side_by_side(np.zeros(3), right)


def test_recordings_are_the_seeded_saccade_protocol(data):
    image = int(data.recordings.image_index[5])
    img = dd.upsample(load_digits().images[image] / 16, 28)
    opts = {k: v for k, v in asdict(data.config).items() if k not in ("digit_size", "sensor")}
    expected = record_saccades(img, sensor=(34, 34), seed=dd.image_seed(3, image), **opts)
    np.testing.assert_array_equal(data.recordings[5], expected)
    assert 1000 < len(expected) < 10_000 and expected["t"].max() <= 300_000


def test_upsample_preserves_a_constant_and_centres():
    np.testing.assert_allclose(dd.upsample(np.full((8, 8), 0.7), 28), 0.7)
    img = np.zeros((8, 8))
    img[3:5, 3:5] = 1
    up = dd.upsample(img, 28)
    assert up.shape == (28, 28)
    np.testing.assert_allclose(up, up[::-1, ::-1])


def test_cache_is_reused_and_keyed_by_parameters(data, cache_dir, monkeypatch):
    assert data.cache_file.parent == cache_dir and data.cache_file.exists()

    def fail(*args, **kwargs):
        raise AssertionError("recorded again instead of reading the cache")

    monkeypatch.setattr(dd, "record_digits", fail)
    again = dd.DoubleDigits(cache_dir, seed=3, images_per_digit=PER_DIGIT, progress=False)
    assert again.cache_file == data.cache_file
    np.testing.assert_array_equal(again.recordings.events, data.recordings.events)
    np.testing.assert_array_equal(again.recordings.offsets, data.recordings.offsets)
    base = dd.cache_path(cache_dir, dd.RecordingConfig(), 3, PER_DIGIT)
    assert base == data.cache_file
    assert dd.cache_path(cache_dir, dd.RecordingConfig(threshold=0.25), 3, PER_DIGIT) != base
    assert dd.cache_path(cache_dir, dd.RecordingConfig(), 4, PER_DIGIT) != base
    assert dd.cache_path(cache_dir, dd.RecordingConfig(), 3, None) != base
    with pytest.raises(AssertionError, match="recorded again"):
        dd.DoubleDigits(cache_dir, seed=4, images_per_digit=PER_DIGIT, progress=False)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKESHOT_CACHE", str(tmp_path))
    assert dd.default_cache_dir() == tmp_path
    monkeypatch.delenv("SPIKESHOT_CACHE")
    assert dd.default_cache_dir().parts[-2:] == (".cache", "spikeshot")


def test_too_few_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="images_per_digit"):
        dd.DoubleDigits(tmp_path, images_per_digit=1, progress=False)
