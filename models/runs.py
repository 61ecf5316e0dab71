"""Two meta-training runs compared the way the README's ablations are: on the in-run validations
both made at the same iterations (the same validation tasks, as every run draws them from its
seed), the mean of the paired differences and its standard error from their spread. Reads only
the runs' ``log.csv``; no torch."""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path


def validation_curve(run_dir: Path) -> dict[int, float]:
    """A run's in-run validation accuracy by iteration, from its ``log.csv``."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no log.csv: not a meta-training run directory")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {int(r["iteration"]): float(r["val_acc"]) for r in rows if r.get("val_acc")}


@dataclass(frozen=True)
class Comparison:
    """Validations of ``run`` and ``reference`` at their common iterations (from ``start``),
    with the mean paired difference (run - reference) and its standard error (None for fewer
    than two pairs)."""

    iterations: list[int]
    run: list[float]
    reference: list[float]
    mean_difference: float
    standard_error: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def compare(run_dir: Path, reference_dir: Path, start: int = 0) -> Comparison:
    """``run_dir`` against ``reference_dir`` at the iterations both validated, from ``start``."""
    a, b = validation_curve(run_dir), validation_curve(reference_dir)
    common = sorted(k for k in a.keys() & b.keys() if k >= start)
    if not common:
        raise ValueError(
            f"{run_dir} and {reference_dir} share no validated iteration from {start} on"
        )
    diffs = [a[k] - b[k] for k in common]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return Comparison(
        common, [a[k] for k in common], [b[k] for k in common], statistics.fmean(diffs), se
    )
