"""Two runs compared on their common in-run validations (``spikeshot compare-runs``)."""

import json

import pytest

from spikeshot.models.runs import compare
from spikeshot.service.cli import main


def _run(path, validations: dict[int, float], last: int = 1000):
    """A run directory whose log.csv validated at ``validations`` (iteration -> accuracy)."""
    path.mkdir()
    rows = ["iteration,loss,acc,val_acc,rates,seconds"]
    for it in range(1, last + 1):
        val = validations.get(it, "")
        rows.append(f"{it},1.0,0.5,{val},,0.1")
    (path / "log.csv").write_text("\n".join(rows) + "\n")
    return path


def test_paired_differences_at_common_iterations(tmp_path, capsys):
    run = _run(tmp_path / "run", {250: 0.50, 500: 0.60, 750: 0.70, 1000: 0.72})
    ref = _run(tmp_path / "ref", {250: 0.45, 500: 0.50, 1000: 0.66}, last=1200)
    c = compare(run, ref)
    assert c.iterations == [250, 500, 1000]  # 750: the reference did not validate there
    assert c.mean_difference == pytest.approx((0.05 + 0.10 + 0.06) / 3)
    diffs = [0.05, 0.10, 0.06]
    spread = (sum((d - c.mean_difference) ** 2 for d in diffs) / 2) ** 0.5
    assert c.standard_error == pytest.approx(spread / 3**0.5)
    assert compare(run, ref, start=500).iterations == [500, 1000]
    assert compare(run, ref, start=1000).standard_error is None  # one pair has no spread
    assert main(["compare-runs", str(run), str(ref)]) == 0
    out = capsys.readouterr().out
    assert "| 500 | 60.0% | 50.0% | +10.0 |" in out
    assert "mean paired difference +7.0 ± 1.5 points" in out and "3 validations" in out
    assert main(["compare-runs", str(run), str(ref), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iterations"] == [250, 500, 1000]


def test_runs_without_common_validations_are_refused(tmp_path, capsys):
    run = _run(tmp_path / "run", {250: 0.5})
    ref = _run(tmp_path / "ref", {500: 0.5})
    with pytest.raises(ValueError, match="share no validated iteration from 0 on"):
        compare(run, ref)
    assert main(["compare-runs", str(run), str(tmp_path / "missing")]) == 3
    assert "holds no log.csv" in capsys.readouterr().err
