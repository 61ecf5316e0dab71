"""A short run of every fuzzing target (``tests/fuzz_targets.py``) under atheris: each starts from
its seeds and mutates them for a few seconds; any finding fails the test with the target's log.
``make fuzz`` runs them for as long as asked."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (coverage-guided fuzzing) is not installed")

HARNESS = Path(__file__).with_name("fuzzing.py")
SECONDS = 4  # per target, after its start-up; about a minute in all on two cores


def run(target: str, folder: Path) -> tuple[str, int, str]:
    corpus = folder / "corpus" / target
    done = subprocess.run(
        [sys.executable, str(HARNESS), target, "--seconds", str(SECONDS), "--corpus", str(corpus)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target, done.returncode, done.stdout + done.stderr


def test_every_target_runs_without_a_finding(tmp_path):
    listed = subprocess.run(
        [sys.executable, str(HARNESS), "--list"], capture_output=True, text=True, check=True
    )
    targets = listed.stdout.split()
    assert {"events", "frames", "evt3", "aedat4", "session", "rpc"} <= set(targets)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda t: run(t, tmp_path), targets))
    failed = {t: log[-3000:] for t, rc, log in results if rc != 0}
    assert not failed, "\n\n".join(f"== {t}\n{log}" for t, log in failed.items())
    for target, _, log in results:
        assert "Done" in log and (tmp_path / "corpus" / target).is_dir(), target
