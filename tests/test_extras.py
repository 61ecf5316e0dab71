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
import json, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit:
    pass
print("MODULES" + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def imported(module: str, *argv: str) -> set[str]:
    """Top-level modules a command loads, run as ``python -m module argv...``."""
    code = PROBE.format(argv=[module, *argv], module=module)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    ).stdout
    return set(json.loads(out.rsplit("MODULES", 1)[1]))


# Modules loaded without being needed: grpcio's own __init__ tries these and goes on without them;
# setuptools' start-up hook loads with every interpreter.
OPTIONAL = {"grpc_tools", "grpc_health", "grpc_reflection", "_distutils_hack"}


def distributions_of(modules: set[str]) -> set[str]:
    owners = metadata.packages_distributions()
    out = set()
    for m in modules - set(sys.stdlib_module_names) - {"spikeshot", "__main__"} - OPTIONAL:
        out |= {_name(d) for d in owners.get(m, [])}
    return out


@pytest.mark.parametrize(
    ("extra", "module", "argv"),
    [
        (None, "spikeshot.clients.cli", ["info", "clients/examples/wave.aedat4"]),
        ("server", "spikeshot.service.cli", ["models"]),
        ("train", "spikeshot.service.cli", ["demo", "--json", "--queries", "1"]),
    ],
)
def test_a_command_needs_only_its_extra(extra, module, argv):
    found = distributions_of(imported(module, *argv))
    assert "torch" in found or extra is None  # the probe saw the command's real work
    outside = found - closure(extra)
    assert not outside, f"{module} {argv[0]} imports {sorted(outside)}, not in [{extra}]"


def test_the_client_side_does_not_need_torch():
    assert "torch" not in closure(None)
    assert {"torch", "safetensors", "prometheus-client"} <= closure("server")
