"""The client side imports and runs where torch cannot be imported."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

WAVE = Path(__file__).resolve().parents[1] / "clients" / "examples" / "wave.aedat4"

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is hidden in this test ({name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    import spikeshot.events, spikeshot.clients, spikeshot.events.formats
    from spikeshot.clients.cli import main

    code = main(["info", "--json", sys.argv[1]])
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"code": code, "torch_modules": loaded}))
    """
)


def test_client_side_runs_without_torch():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(WAVE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    *table, last = done.stdout.strip().splitlines()
    result = json.loads(last)
    assert result == {"code": 0, "torch_modules": []}
    assert json.loads(table[-1])["format"] == "aedat4"


def test_the_blocker_does_block_torch():
    probe = SCRIPT.split("import spikeshot.events")[0] + "import torch\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "torch is hidden" in done.stderr
