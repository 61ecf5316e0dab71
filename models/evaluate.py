"""Few-shot evaluation the way the literature reports it: N-way K-shot tasks on meta-test classes,
mean query accuracy over many tasks with a 95% confidence interval (1.96 standard errors).

Within a task, support and query examples are distinct recordings (drawn without replacement), so
a query is never a support example. Two protocols: tasks of classes mixed across the split's
groups (scripts), and tasks whose classes all come from one group (``within_group``: look-alike
characters of one script, the harder and more realistic case). The inner loop starts from the
meta-trained readout (``head="meta"``) or from one set to the support set's class means
(``head="prototype"``, Proto-MAML's start, ``Network.prototype_head``, whose logits rank the
classes by the Euclidean distance of the features to each mean); with no step, that is a
nearest-class-mean classifier, what the meta-trained features alone are worth. Quantized, that
readout has its own per-tensor grid, as a session's has (``fit.prototype_start``)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from spikeshot.events.atomic import write_atomic
from spikeshot.models import checkpoint, fit
from spikeshot.models.checkpoint import Checkpoint
from spikeshot.models.datasets.base import MetaDataset
from spikeshot.models.datasets.episodes import TaskSampler
from spikeshot.models.maml import accuracy, adapt
from spikeshot.models.network import HEADS
from spikeshot.models.quantize import Quantizer

# Rows measured under another protocol are never taken over: 1 drew support and queries with
# replacement (a query could be a support recording); 2 draws them distinct.
PROTOCOL = 2


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
    within_group: bool = False
    head: str = "meta"
    # the meta-dataset the tasks come from, as ``--dataset`` names it; "" is the card's own
    # training dataset (as rows written before this field mean). ``evaluate`` is given it opened.
    dataset: str = ""


def evaluate(ckpt: Checkpoint, dataset: MetaDataset, setting: Setting, progress=None) -> dict:
    """Mean and 95% CI of query accuracy over ``setting.tasks`` tasks; ``progress(i)`` per task."""
    s = setting
    if s.ways > ckpt.config.ways:
        raise ValueError(f"ways={s.ways} exceeds the network's {ckpt.config.ways} outputs")
    if s.head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {s.head!r}")
    net = ckpt.network
    quantizer = None if s.bits is None else Quantizer(s.bits, rounding=s.rounding)
    mask = torch.arange(ckpt.config.ways) < s.ways
    sampler = TaskSampler(
        dataset.split(s.split), s.ways, s.shots, s.queries, ckpt.geometry, s.seed, s.within_group
    )
    gen = torch.Generator().manual_seed(s.seed)
    accs = []
    for i in range(s.tasks):
        task = sampler[i]
        support, query = torch.from_numpy(task.support), torch.from_numpy(task.query)
        labels = torch.from_numpy(task.support_labels)
        start, scales = ckpt.params, None
        if s.head == "prototype":
            grid = None if quantizer is None else quantizer.scales(start)
            start, scales = fit.prototype_start(
                net, start, support, labels, s.ways, quantizer, grid, gen
            )
        fast = adapt(
            net.forward,
            start,
            support,
            labels,
            steps=s.steps,
            lr=ckpt.step_sizes,
            quantizer=quantizer,
            class_mask=mask,
            scales=scales,
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
        "protocol": PROTOCOL,
        "arch": ckpt.config.arch,
        "accuracy_mean": float(a.mean()),
        "accuracy_ci95": float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0,
    }


def result_key(fingerprint: str, setting: Setting) -> tuple:
    """What identifies a result: the weights (``checkpoint.fingerprint``) and the whole setting."""
    return (fingerprint, *astuple(setting))


def row_key(row: dict) -> tuple | None:
    """``result_key`` of a result row; None for a row of another protocol or without weights."""
    if row.get("protocol") != PROTOCOL or "fingerprint" not in row:
        return None
    setting = Setting(**{f.name: row.get(f.name, f.default) for f in fields(Setting)})
    return result_key(row["fingerprint"], setting)


def load_results(path: Path) -> dict[tuple, dict]:
    """The rows of a results file (``save_results``) by ``result_key``; none when it is absent.
    Rows of another protocol are left out."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())
    return {k: r for r in rows if (k := row_key(r)) is not None}


def save_results(path: Path, rows: list[dict]) -> None:
    """Write result rows as JSON, atomically."""
    write_atomic(path, json.dumps(rows, indent=2) + "\n")


def record_evaluation(path: str | Path, rows: list[dict]) -> None:
    """Add result rows to a checkpoint's card (``metrics.evaluation``), replacing rows of the same
    weights and setting and every row of another protocol, so a card holds what ``spikeshot
    evaluate`` measured on its weights."""
    _, cpath = checkpoint.paths(path)
    card = json.loads(cpath.read_text())
    new = {row_key(r) for r in rows}
    metrics = card.setdefault("metrics", {})
    old = metrics.get("evaluation", [])
    kept = [r for r in old if (k := row_key(r)) is not None and k not in new]
    metrics["evaluation"] = kept + rows
    write_atomic(cpath, json.dumps(card, indent=2) + "\n")


def grid(
    tasks: int,
    queries: int = 10,
    within_group: bool = False,
    head: str = "meta",
    model_steps: int = 1,
) -> list[Setting]:
    """The settings of the full report: float, 8-bit and 4-bit inner loops; 1 and 5 shots; 1 and
    5 inner steps, and the model's own (``model_steps``, e.g. 0 for a prototypical network);
    tasks of mixed classes, and with ``within_group`` also of one group's."""
    return [
        Setting(
            shots=shots,
            steps=steps,
            bits=bits,
            queries=queries,
            tasks=tasks,
            within_group=within,
            head=head,
        )
        for within, bits, shots, steps in itertools.product(
            (False, True) if within_group else (False,),
            (None, 8, 4),
            (1, 5),
            sorted({model_steps, 1, 5}),
        )
    ]


def markdown_table(rows: list[dict]) -> str:
    """The rows as a table; its last column, the split the tasks came from, names the dataset
    too where it is not the card's own."""
    lines = [
        "| network | classes | weights | ways | shots | steps | accuracy (95% CI) | tasks "
        "| split |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bits = "float32" if r["bits"] is None else f"{r['bits']}-bit"
        acc = f"{100 * r['accuracy_mean']:.1f}% ± {100 * r['accuracy_ci95']:.1f}"
        classes = "one group" if r["within_group"] else "mixed"
        head = ", prototype head" if r.get("head") == "prototype" else ""
        split = f"{r['dataset']} {r['split']}" if r.get("dataset") else r["split"]
        lines.append(
            f"| {r['arch'].upper()}{head} | {classes} | {bits} | {r['ways']} | {r['shots']} "
            f"| {r['steps']} | {acc} | {r['tasks']} | {split} |"
        )
    return "\n".join(lines)


def plot_bits(rows: list[dict], path) -> None:
    """Accuracy against inner-loop weight bits, one line per network and shots/steps setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))

    def line(r):
        return r["within_group"], r["arch"], r["shots"], r["steps"]

    for key in sorted({line(r) for r in rows}):
        within, arch, shots, steps = key
        pts = sorted(
            (32 if r["bits"] is None else r["bits"], r["accuracy_mean"], r["accuracy_ci95"])
            for r in rows
            if line(r) == key
        )
        xs, ys, es = zip(*pts, strict=False)
        ax.errorbar(
            xs,
            [100 * y for y in ys],
            yerr=[100 * e for e in es],
            marker="o",
            label=f"{arch.upper()} {shots}-shot {steps}-step" + (", one group" if within else ""),
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 32], ["4", "8", "float32"])
    ax.set_xlabel("inner-loop weight bits")
    ax.set_ylabel("5-way query accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
