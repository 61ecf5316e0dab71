"""Few-shot evaluation the way the literature reports it: N-way K-shot tasks on meta-test classes,
mean query accuracy over many tasks with a 95% confidence interval (1.96 standard errors)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from spikeshot.models.checkpoint import Checkpoint
from spikeshot.models.datasets.base import MetaDataset
from spikeshot.models.datasets.episodes import TaskSampler
from spikeshot.models.maml import accuracy, adapt
from spikeshot.models.quantize import Quantizer


@dataclass(frozen=True)
class Setting:
    ways: int = 5
    shots: int = 1
    steps: int = 1
    bits: int | None = None
    rounding: str = "nearest"
    queries: int = 10
    tasks: int = 600
    split: str = "test"
    seed: int = 0


def evaluate(ckpt: Checkpoint, dataset: MetaDataset, setting: Setting, progress=None) -> dict:
    """Mean and 95% CI of query accuracy over ``setting.tasks`` tasks; ``progress(i)`` per task."""
    s = setting
    if s.ways > ckpt.config.ways:
        raise ValueError(f"ways={s.ways} exceeds the network's {ckpt.config.ways} outputs")
    net = ckpt.network
    quantizer = None if s.bits is None else Quantizer(s.bits, rounding=s.rounding)
    mask = torch.arange(ckpt.config.ways) < s.ways
    sampler = TaskSampler(dataset.split(s.split), s.ways, s.shots, s.queries, ckpt.geometry, s.seed)
    lr = ckpt.inner_lr if ckpt.inner_lr else ckpt.inner_step_size
    gen = torch.Generator().manual_seed(s.seed)
    accs = []
    for i in range(s.tasks):
        task = sampler[i]
        support, query = torch.from_numpy(task.support), torch.from_numpy(task.query)
        labels = torch.from_numpy(task.support_labels)
        fast = adapt(
            net.forward,
            ckpt.params,
            support,
            labels,
            steps=s.steps,
            lr=lr,
            quantizer=quantizer,
            class_mask=mask,
            generator=gen,
        )
        with torch.no_grad():
            logits = net.forward(fast, query).masked_fill(~mask, float("-inf"))
        accs.append(accuracy(logits, torch.from_numpy(task.query_labels)))
        if progress is not None:
            progress(i)
    a = np.asarray(accs)
    return {
        **asdict(s),
        "arch": ckpt.config.arch,
        "accuracy_mean": float(a.mean()),
        "accuracy_ci95": float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0,
    }


def result_key(fingerprint: str, setting: Setting) -> tuple:
    """What identifies a result: the weights (``checkpoint.fingerprint``) and the whole setting."""
    return (fingerprint, *astuple(setting))


def load_results(path: Path) -> dict[tuple, dict]:
    """The rows of a results file (``save_results``) by ``result_key``; none when it is absent."""
    if not path.exists():
        return {}
    names = [f.name for f in fields(Setting)]
    return {
        result_key(r["fingerprint"], Setting(**{n: r[n] for n in names})): r
        for r in json.loads(path.read_text())
        if "fingerprint" in r
    }


def save_results(path: Path, rows: list[dict]) -> None:
    """Write result rows as JSON, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(path)


def grid(tasks: int) -> list[Setting]:
    """The settings of the full report: float, 8-bit and 4-bit inner loops; 1 and 5 shots; 1 and
    5 inner steps."""
    return [
        Setting(shots=shots, steps=steps, bits=bits, tasks=tasks)
        for bits, shots, steps in itertools.product((None, 8, 4), (1, 5), (1, 5))
    ]


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| network | weights | shots | steps | accuracy (95% CI) | tasks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        bits = "float32" if r["bits"] is None else f"{r['bits']}-bit"
        acc = f"{100 * r['accuracy_mean']:.1f}% ± {100 * r['accuracy_ci95']:.1f}"
        lines.append(
            f"| {r['arch'].upper()} | {bits} | {r['shots']} | {r['steps']} | {acc} | {r['tasks']} |"
        )
    return "\n".join(lines)


def plot_bits(rows: list[dict], path) -> None:
    """Accuracy against inner-loop weight bits, one line per network and shots/steps setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["arch"], r["shots"], r["steps"]) for r in rows})
    for arch, shots, steps in keys:
        pts = sorted(
            (32 if r["bits"] is None else r["bits"], r["accuracy_mean"], r["accuracy_ci95"])
            for r in rows
            if (r["arch"], r["shots"], r["steps"]) == (arch, shots, steps)
        )
        xs, ys, es = zip(*pts, strict=False)
        ax.errorbar(
            xs,
            [100 * y for y in ys],
            yerr=[100 * e for e in es],
            marker="o",
            label=f"{arch.upper()} {shots}-shot {steps}-step",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 32], ["4", "8", "float32"])
    ax.set_xlabel("inner-loop weight bits")
    ax.set_ylabel("5-way query accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
