"""The README's commands as a user runs them: the installed commands in subprocesses, on tiny
settings where the README's own would take long."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of the commands: a meta-dataset cache of this module's own."""
    return {**os.environ, "SPIKESHOT_CACHE": str(tmp_path_factory.mktemp("cache"))}


def run(env, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_spikeshot_demo_json(env):
    """``spikeshot demo --json``: the shipped model learns its 5-way 1-shot task on the 8-bit grid
    (the card measures about 90%; 60% of 25 queries is far above the 20% of chance)."""
    out = json.loads(run(env, str(BIN / "spikeshot"), "demo", "--json").stdout)
    assert out["weight_bits"] == 8 and out["classified"] == 25
    assert out["accuracy"] >= 0.6


def test_meta_train_from_a_shipped_recipe(env, tmp_path):
    """``spikeshot meta-train --config models/zoo/double_digits.toml`` with a tiny override."""
    run_dir = tmp_path / "run"
    tiny = ["training.iterations=2", "training.val_every=2", "training.val_tasks=2"]
    tiny += ["training.meta_batch=1", "model.channels=[4, 4, 4]"]
    args = [str(BIN / "spikeshot"), "meta-train", "--config", "models/zoo/double_digits.toml"]
    args += [a for t in tiny for a in ("--set", t)]
    run(env, *args, "--run-dir", str(run_dir), "--quiet")
    assert json.loads((run_dir / "state.json").read_text())["iteration"] == 2
    card = json.loads((run_dir / "best.json").read_text())
    assert card["model"]["channels"] == [4, 4, 4] and card["quantization"]["bits"] == 8
    assert len((run_dir / "log.csv").read_text().splitlines()) == 3  # header + 2 iterations


def test_evaluate_a_shipped_model(env):
    """``spikeshot evaluate models/zoo/double_digits ... --json`` on 5 tasks (250 queries); its
    card measures 99% on 600."""
    args = ["evaluate", "models/zoo/double_digits", "--ways", "5", "--shots", "1", "--steps", "1"]
    out = json.loads(run(env, str(BIN / "spikeshot"), *args, "--tasks", "5", "--json").stdout)
    assert out["tasks"] == 5 and out["protocol"] == 2
    assert out["accuracy_mean"] >= 0.9


def test_the_adaptation_benchmark_measures_densities_on_a_real_recording(realdata):
    """``bench/adapt.py --recording``: a real camera's events, mapped onto the default model's
    sensor, give a density of its pixel-bins and a firing rate per hidden layer."""
    spec = importlib.util.spec_from_file_location("bench_adapt", ROOT / "bench" / "adapt.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.real_densities(realdata / "evt3_sample.raw")  # 1280x720 onto 34x34
    assert 0 < out["input_density"] < 1
    assert len(out["hidden_firing_rates"]) == 3 and all(
        0 < r < 1 for r in out["hidden_firing_rates"]
    )


@pytest.mark.parametrize("bench", ["events", "adapt", "service", "soak", "cluster"])
def test_benchmark_quick_runs_write_their_json(env, tmp_path, bench):
    missing = [b for b in ("redis-server", "nginx") if bench == "cluster" and not shutil.which(b)]
    if missing:
        pytest.skip(f"bench/cluster.py runs {' and '.join(missing)}, absent here (Debian packages)")
    path = tmp_path / f"{bench}.json"
    run(env, sys.executable, f"bench/{bench}.py", "--quick", "--json", str(path), timeout=900)
    results = json.loads(path.read_text())
    assert results["quick"] is True
