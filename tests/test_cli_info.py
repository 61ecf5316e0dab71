"""``spikeshot-client info``: the table, the JSON object, exit codes, and the bundled example."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikeshot.clients.cli import main
from spikeshot.events.formats import read

EXAMPLES = Path(__file__).resolve().parents[1] / "clients" / "examples"
WAVE = EXAMPLES / "wave.aedat4"


def test_table(capsys):
    assert main(["info", str(WAVE)]) == 0
    out = capsys.readouterr().out
    events = read(WAVE).events
    rows = dict(line.split("  ", 1) for line in out.strip().splitlines())
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["format"] == "aedat4"
    assert rows["sensor"] == "346 x 260"
    assert rows["events"] == f"{len(events):,}"
    on = int(events["p"].sum())
    assert rows["ON events"] == f"{on:,} ({100 * on / len(events):.1f}%)"
    assert rows["first timestamp"] == f"{events['t'][0]:,} us"
    assert rows["last timestamp"] == f"{events['t'][-1]:,} us"
    assert rows["other streams"] == "none"


def test_json(capsys):
    assert main(["info", str(WAVE), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    events = read(WAVE).events
    assert summary["format"] == "aedat4"
    assert (summary["width"], summary["height"]) == (346, 260)
    assert summary["events"] == len(events)
    assert summary["on_events"] == int(events["p"].sum())
    assert summary["t_first_us"] == int(events["t"][0])
    assert summary["t_last_us"] == int(events["t"][-1])
    duration = int(events["t"][-1] - events["t"][0])
    assert summary["duration_us"] == duration
    assert summary["mean_rate_ev_s"] == pytest.approx(len(events) / duration * 1e6)
    assert summary["other_streams"] == []


def test_json_of_real_files(realdata, capsys):
    reference = json.loads((realdata / "REFERENCE.json").read_text())
    for name in ("evt2_sample.raw", "sample_ncars.dat", "sample_nmnist.bin", "sample.aedat4"):
        assert main(["info", "--json", str(realdata / name)]) == 0
        summary = json.loads(capsys.readouterr().out)
        ref = reference[name]
        assert [summary["width"], summary["height"]] == ref["sensor"], name
        for key in ("events", "on_events", "t_first_us", "t_last_us"):
            assert summary[key] == ref[key], (name, key)


@pytest.mark.parametrize("argv", [[], ["info"], ["frobnicate"], ["info", "x", "--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["info", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_missing_file_exits_3(tmp_path, capsys):
    missing = tmp_path / "missing.aedat4"
    assert main(["info", str(missing)]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and str(missing) in captured.err


def test_corrupt_file_exits_3_naming_file_and_offset(tmp_path, capsys):
    bad = tmp_path / "cut.bin"
    bad.write_bytes(b"\x01\x02\x80\x00\x05" * 3 + b"\x01\x02")
    assert main(["info", str(bad)]) == 3
    err = capsys.readouterr().err
    assert str(bad) in err and "byte offset 15" in err and "truncated" in err


def test_installed_command_exit_status(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    command = [sys.executable, "-m", "spikeshot.clients.cli", "info", str(bad)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "bad .npy header" in done.stderr


def test_example_is_small_and_regenerates_identically(tmp_path):
    assert WAVE.stat().st_size < 200_000
    out = tmp_path / "wave.aedat4"
    script = EXAMPLES / "make_wave.py"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    fresh, bundled = read(out), read(WAVE)
    assert np.array_equal(fresh.events, bundled.events)
    assert (fresh.width, fresh.height) == (bundled.width, bundled.height) == (346, 260)
    assert len(bundled.events) > 10_000
    assert 0.4 < bundled.events["p"].mean() < 0.6
