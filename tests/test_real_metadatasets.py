"""Meta-datasets over real formats: Double NMNIST from an N-MNIST tree, Double ASL-DVS from .mat
files, and a generic folder of class sub-folders. Each test builds a tiny tree whose events encode
where they came from (digit or letter in x, file in y), so labels and pairing can be checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from spikeshot.events import formats, nmnist
from spikeshot.events.array import Limits, make_events, validate
from spikeshot.models.datasets.asl_dvs import LETTERS, DoubleASLDVS, pair_splits, read_mat
from spikeshot.models.datasets.base import SPLITS, Sensor
from spikeshot.models.datasets.double_nmnist import CLASS_SPLITS, DoubleNMNIST
from spikeshot.models.datasets.folder import FolderDataset, place, split_classes

RNG = np.random.default_rng(0)


def _events(n: int, x, y, t0: int = 0) -> np.ndarray:
    t = t0 + np.sort(RNG.integers(0, 300_000, n))
    return make_events(t, np.broadcast_to(x, n), np.broadcast_to(y, n), RNG.integers(0, 2, n))


# --- Double NMNIST -------------------------------------------------------------------------------


# Digit d's recordings put their events at column 1 + d; file k of Train at row 1 + k, of Test at
# row 20 + k. Column 0 and row 33 lie outside the centred 32x32 crop.
@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nmnist")
    for part, rows in (("Train", (1, 2)), ("Test", (20, 21))):
        for d in range(10):
            (root / part / str(d)).mkdir(parents=True)
            for k, row in enumerate(rows):
                ev = np.concatenate([_events(40, 1 + d, row), _events(5, 0, 33)])
                nmnist.write(root / part / str(d) / f"{k:05d}.bin", ev[np.argsort(ev["t"])])
    return root


def test_double_nmnist_classes_and_splits(nmnist_root):
    ds = DoubleNMNIST(nmnist_root)
    classes = {s: ds.split(s).classes for s in SPLITS}
    assert [len(classes[s]) for s in SPLITS] == [64, 16, 20]
    every = [c for s in SPLITS for c in classes[s]]
    assert sorted(every) == [f"{i:02d}" for i in range(100)]
    assert classes["test"] == list(CLASS_SPLITS["test"])


def test_double_nmnist_pairs_digits_side_by_side(nmnist_root):
    ds = DoubleNMNIST(nmnist_root)
    rng = np.random.default_rng(1)
    for name, rows in (("train", {0, 1}), ("val", {19, 20}), ("test", {19, 20})):
        split = ds.split(name)
        assert split.sensor == Sensor(64, 32)
        for i in (0, len(split) - 1):
            a, b = (int(c) for c in split.classes[i])
            ev = split.draw(i, 1, rng)[0].events
            validate(ev, Limits(width=64, height=32))  # sorted by time, inside 64x32
            left, right = ev[ev["x"] < 32], ev[ev["x"] >= 32]
            assert len(left) == len(right) == 40  # the out-of-crop events are gone
            assert set(left["x"]) == {a} and set(right["x"] - 32) == {b}
            assert set(left["y"]) | set(right["y"]) <= rows  # train or test recordings


def test_double_nmnist_names_a_missing_digit(tmp_path):
    (tmp_path / "Train" / "0").mkdir(parents=True)
    with pytest.raises(ValueError, match="digit 0"):
        DoubleNMNIST(tmp_path)
    with pytest.raises(FileNotFoundError):
        DoubleNMNIST(tmp_path / "absent")


# --- Double ASL-DVS ------------------------------------------------------------------------------


def _save_asl(path: Path, x: int, y: int, n: int = 30, t0: int = 5_000_000) -> None:
    ev = _events(n, x, y, t0)
    scipy.io.savemat(
        path,
        {
            "ts": ev["t"].astype(np.uint32).reshape(-1, 1),
            "x": ev["x"].astype(np.uint8).reshape(-1, 1),
            "y": ev["y"].astype(np.uint8).reshape(-1, 1),
            "pol": ev["p"].reshape(-1, 1),
        },
    )


# Letter i's events sit at column 10 * i; file k's at row k of the file (row 179 - k on screen).
@pytest.fixture(scope="module")
def asl_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("asl")
    for i, letter in enumerate(LETTERS):
        (root / letter).mkdir()
        for k in range(10):
            _save_asl(root / letter / f"{letter}_{k:04d}.mat", 10 * i, k)
    return root


def test_read_mat_flips_y_and_starts_time_at_zero(asl_root):
    ev = read_mat(asl_root / "c" / "c_0003.mat")
    validate(ev, Limits(width=240, height=180))
    assert set(ev["x"]) == {20} and set(ev["y"]) == {176}
    assert ev["t"][0] == 0 and ev["t"][-1] < 300_000


def test_double_asl_dvs_classes_and_splits(asl_root):
    ds = DoubleASLDVS(asl_root)
    classes = {s: ds.split(s).classes for s in SPLITS}
    assert [len(classes[s]) for s in SPLITS] == [369, 92, 115]
    every = sorted(c for s in SPLITS for c in classes[s])
    assert every == sorted(a + b for a in LETTERS for b in LETTERS)
    assert pair_splits(0) == classes and pair_splits(1) != classes


def test_double_asl_dvs_pairs_letters_from_their_halves(asl_root):
    ds = DoubleASLDVS(asl_root)
    rng = np.random.default_rng(2)
    held = {
        letter: {179 - int(p.stem[-1]) for p in ds.halves["heldout"][letter]} for letter in LETTERS
    }
    assert all(len(rows) == 2 for rows in held.values())  # 20% of 10 files
    for name in SPLITS:
        split = ds.split(name)
        assert split.sensor == Sensor(480, 180)
        for i in range(0, len(split), 23):
            a, b = split.classes[i]
            ev = split.draw(i, 1, rng)[0].events
            validate(ev, Limits(width=480, height=180))
            left, right = ev[ev["x"] < 240], ev[ev["x"] >= 240]
            assert len(left) == len(right) == 30
            assert set(left["x"]) == {10 * LETTERS.index(a)}
            assert set(right["x"] - 240) == {10 * LETTERS.index(b)}
            for letter, part in ((a, left), (b, right)):
                drawn_heldout = set(part["y"]) <= held[letter]
                assert drawn_heldout == (name != "train")


def test_read_mat_rejects_bad_files(tmp_path):
    _save_asl(tmp_path / "high.mat", 3, 180)
    with pytest.raises(ValueError, match="high.mat.*y"):
        read_mat(tmp_path / "high.mat")
    scipy.io.savemat(tmp_path / "keys.mat", {"ts": np.zeros((2, 1)), "x": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="missing variables \\['y', 'pol'\\]"):
        read_mat(tmp_path / "keys.mat")
    # A MATLAB v7.3 header (HDF5 container): scipy refuses it, so do we, by name.
    header = b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    (tmp_path / "v73.mat").write_bytes(header + b"\0" * 512)
    with pytest.raises(ValueError, match="v7.3"):
        read_mat(tmp_path / "v73.mat")


def test_double_asl_dvs_names_a_missing_letter(asl_root, tmp_path):
    for letter in LETTERS[:-1]:
        (tmp_path / letter).symlink_to(asl_root / letter)
    with pytest.raises(ValueError, match="letter 'y'"):
        DoubleASLDVS(tmp_path)


# --- generic folder ------------------------------------------------------------------------------


def _write_class(root: Path, name: str, files: int, fmt: str, size: tuple[int, int], x: int):
    (root / name).mkdir(parents=True)
    for k in range(files):
        ev = _events(25, x, k)
        formats.write(root / name / f"r{k}.{fmt}", ev, *size)


def test_folder_splits_by_seeded_permutation_and_ignores_other_files(tmp_path):
    for i in range(10):
        _write_class(tmp_path, f"class{i}", 2, "npz", (40, 30), i)
    (tmp_path / "class0" / "notes.txt").write_text("not a recording")
    (tmp_path / ".hidden").mkdir()
    ds = FolderDataset(tmp_path, seed=3)
    classes = {s: ds.split(s).classes for s in SPLITS}
    assert [len(classes[s]) for s in SPLITS] == [6, 2, 2]
    assert sorted(c for s in SPLITS for c in classes[s]) == [f"class{i}" for i in range(10)]
    assert classes == split_classes([f"class{i}" for i in range(10)], (0.64, 0.16, 0.2), 3)
    assert classes != FolderDataset(tmp_path, seed=4).class_splits
    split = ds.split("test")
    assert split.sensor == Sensor(40, 30)
    ev = split.draw(1, 1, np.random.default_rng(0))[0].events
    assert set(ev["x"]) == {int(split.classes[1][5:])} and len(ev) == 25


def test_folder_centres_mixed_sensor_sizes(tmp_path):
    _write_class(tmp_path, "small", 1, "bin", (34, 34), 2)  # N-MNIST: 34x34
    _write_class(tmp_path, "wide", 1, "aedat4", (100, 20), 90)
    _write_class(tmp_path, "tall", 1, "npz", (30, 60), 7)
    ds = FolderDataset(tmp_path, fractions=(1, 1, 1))
    assert ds.sensor == Sensor(100, 60)
    rng = np.random.default_rng(0)
    shifts = {"small": (33, 13), "wide": (0, 20), "tall": (35, 0)}
    for name in SPLITS:
        split = ds.split(name)
        (cls,) = split.classes
        ev = split.draw(0, 1, rng)[0].events
        x0 = {"small": 2, "wide": 90, "tall": 7}[cls]
        assert set(ev["x"]) == {x0 + shifts[cls][0]}
        assert ev["y"].min() == shifts[cls][1]
    fixed = FolderDataset(tmp_path, fractions=(1, 1, 1), sensor=(20, 20))
    ev = fixed.split("train").draw(0, 1, rng)[0].events
    validate(ev, Limits(width=20, height=20, allow_empty=True))


def test_place_crops_a_larger_recording():
    ev = make_events([0, 1, 2], [0, 50, 99], [0, 10, 19], [1, 0, 1])
    out = place(ev, (100, 20), Sensor(60, 10))
    assert out["x"].tolist() == [30] and out["y"].tolist() == [5]


def test_folder_uses_explicit_split_folders(tmp_path):
    for s, names in (("train", "abc"), ("val", "d"), ("test", "ef")):
        for n in names:
            _write_class(tmp_path / s, n, 1, "npz", (16, 16), 1)
    ds = FolderDataset(tmp_path)
    assert {s: ds.split(s).classes for s in SPLITS} == {
        "train": ["a", "b", "c"],
        "val": ["d"],
        "test": ["e", "f"],
    }
    _write_class(tmp_path / "test", "a", 1, "npz", (16, 16), 1)
    with pytest.raises(ValueError, match="\\['a'\\] also appear"):
        FolderDataset(tmp_path)


def test_folder_rejects_bad_layouts(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="not all of"):
        FolderDataset(tmp_path)
    (tmp_path / "train").rmdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: class folder without recordings"):
        FolderDataset(tmp_path)
    (tmp_path / "empty").rmdir()
    _write_class(tmp_path, "only", 1, "npz", (8, 8), 1)
    _write_class(tmp_path, "two", 1, "npz", (8, 8), 1)
    with pytest.raises(ValueError, match="need at least 3"):
        FolderDataset(tmp_path)


def test_folder_of_real_recordings(realdata, tmp_path):
    ref = json.loads((realdata / "REFERENCE.json").read_text())
    for cls, name in (
        ("digit", "sample_nmnist.bin"),
        ("dvx", "sample.aedat4"),
        ("car", "sample_ncars.dat"),
    ):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / name).symlink_to(realdata / name)
    ds = FolderDataset(tmp_path, fractions=(1, 1, 1))
    assert ds.sensor == Sensor(320, 240)  # the DVXplorer's, the largest
    for s in SPLITS:
        split = ds.split(s)
        if split.classes == ["digit"]:
            ev = split.draw(0, 1, np.random.default_rng(0))[0].events
            r = ref["sample_nmnist.bin"]
            assert len(ev) == r["events"]
            assert int(ev["x"].sum()) == r["sum_x"] + r["events"] * (320 - 34) // 2
            assert int(ev["y"].sum()) == r["sum_y"] + r["events"] * (240 - 34) // 2
