"""Each documented command imports only what the extra the README names for it installs: the
command runs in a child process, and every third-party module it loaded must belong to a
distribution that ``pip install '.[EXTRA]'`` brings in (the extra's requirements and theirs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


@cache
def closure(extra: str | None) -> frozenset[str]:
    """The distributions ``pip install spikeshot[extra]`` installs (None: the base install)."""
    wanted, seen = [("spikeshot", extra)], set()
    while wanted:
        dist, ext = wanted.pop()
        if (dist, ext) in seen:
            continue
        seen.add((dist, ext))
        for line in metadata.requires(dist) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ext or ""}):
                wanted += [(req.name, None)] + [(req.name, e) for e in req.extras]
    return frozenset(_name(d) for d, _ in seen)


PROBE = """
import importlib.abc, json, runpy, sys

before = set(sys.modules)  # the interpreter's own start-up (site hooks) is not the command's


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in this extra)", name=name)

sys.meta_path.insert(0, Absent())
sys.argv = {argv!r}
code = 0
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as e:
    code = e.code or 0
loaded = {{m.split(".")[0] for m in set(sys.modules) - before}}
print("RESULT" + json.dumps([code, sorted(loaded)]))
"""


def outside_modules(extra: str | None) -> set[str]:
    """Top-level modules of the installed distributions that ``spikeshot[extra]`` does not bring."""
    allowed = closure(extra)
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if not {_name(d) for d in dists} & allowed
    }


def run_without(extra: str | None, module: str, *argv: str) -> tuple[int, set[str]]:
    """Run ``python -m module argv...`` with only ``extra``'s distributions importable: its exit
    status and the top-level modules it loaded."""
    code = PROBE.format(blocked=sorted(outside_modules(extra)), argv=[module, *argv], module=module)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert "RESULT" in done.stdout, done.stderr[-3000:]
    status, modules = json.loads(done.stdout.rsplit("RESULT", 1)[1])
    return status, set(modules)


@pytest.mark.parametrize(
    ("extra", "module", "argv"),
    [
        (None, "spikeshot.clients.cli", ["info", "clients/examples/wave.aedat4"]),
        ("server", "spikeshot.service.cli", ["models"]),
        ("train", "spikeshot.service.cli", ["demo", "--json", "--queries", "1"]),
    ],
)
def test_a_command_runs_with_only_its_extra_installed(extra, module, argv):
    """Everything outside the extra is made unimportable (as on a machine that installed only
    it); the command must still succeed. Optional accelerators (numba for the readers) and
    grpcio's optional imports are then simply not there."""
    status, modules = run_without(extra, module, *argv)
    assert status == 0, f"{module} {argv[0]} fails with only [{extra}] installed"
    assert ("torch" in modules) == (extra is not None)  # the probe saw the command's real work
    assert not modules & outside_modules(extra)


def test_the_client_side_does_not_need_torch():
    assert "torch" not in closure(None)
    assert {"torch", "safetensors", "prometheus-client"} <= closure("server")
