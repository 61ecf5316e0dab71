"""Evaluation: the chance-level control, the confidence interval, and the command's JSON."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from spikeshot.events import make_events
from spikeshot.events.binning import FrameGeometry
from spikeshot.events.npyfile import write
from spikeshot.models import ModelConfig, Network
from spikeshot.models.checkpoint import Checkpoint, save
from spikeshot.models.datasets.episodes import TaskSampler
from spikeshot.models.datasets.folder import FolderDataset
from spikeshot.models.evaluate import Setting, evaluate, grid, row_key
from spikeshot.service.cli import main

CFG = ModelConfig(
    ways=3,
    input_hw=(8, 8),
    bins=3,
    burn_in=0,
    channels=(4,),
    kernel=3,
    alpha=0.8,
    beta=0.6,
    input_gain=1.0,
    input_clip=4.0,
    zero_head=False,
)
GEOM = FrameGeometry(sensor_width=16, sensor_height=16, downsample=2, bins=3, window_us=30000)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Ten classes; each a fixed bright square somewhere on a 16x16 sensor, with jitter."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for c in range(10):
        cx, cy = rng.integers(3, 13, size=2)
        (root / f"class{c}").mkdir()
        for i in range(6):
            n = 300
            x = np.clip(cx + rng.integers(-2, 3, n), 0, 15)
            y = np.clip(cy + rng.integers(-2, 3, n), 0, 15)
            t = np.sort(rng.integers(0, 30000, n))
            write(
                root / f"class{c}" / f"{i}.npz", make_events(t, x, y, rng.integers(0, 2, n)), 16, 16
            )
    return root


def _ckpt(seed=0):
    return Checkpoint(CFG, GEOM, Network(CFG).init(seed), training={"dataset": "folder"})


def test_a_random_network_without_adaptation_scores_chance(folder):
    dataset = FolderDataset(folder, fractions=(0.4, 0.3, 0.3))
    r = evaluate(_ckpt(), dataset, Setting(ways=3, shots=1, steps=0, tasks=60, queries=4))
    # no inner step: the random head's answers carry no information about the task
    assert abs(r["accuracy_mean"] - 1 / 3) < max(2 * r["accuracy_ci95"], 0.05), r


def test_adaptation_beats_chance(folder):
    dataset = FolderDataset(folder, fractions=(0.4, 0.3, 0.3))
    r = evaluate(_ckpt(), dataset, Setting(ways=3, shots=1, steps=3, tasks=40, queries=4))
    assert r["accuracy_mean"] > 1 / 3 + 2 * r["accuracy_ci95"], r
    assert 0 <= r["accuracy_ci95"] < 0.2 and r["tasks"] == 40


def test_more_ways_than_outputs_is_an_error(folder):
    dataset = FolderDataset(folder, fractions=(0.4, 0.3, 0.3))
    with pytest.raises(ValueError, match="ways=4 exceeds the network's 3 outputs"):
        evaluate(_ckpt(), dataset, Setting(ways=4, tasks=1))


def test_command_prints_one_json_object(folder, tmp_path, capsys):
    save(_ckpt(), tmp_path / "tiny")
    rc = main(
        [
            "evaluate",
            str(tmp_path / "tiny"),
            "--dataset",
            f"folder:{folder}",
            "--ways",
            "2",
            "--shots",
            "1",
            "--steps",
            "1",
            "--bits",
            "8",
            "--queries",
            "3",
            "--tasks",
            "5",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy_mean", "accuracy_ci95", "tasks"} <= set(out)
    assert out["tasks"] == 5 and out["bits"] == 8 and out["ways"] == 2
    assert 0.0 <= out["accuracy_mean"] <= 1.0


def test_record_stores_the_results_in_the_card(folder, tmp_path, capsys):
    save(_ckpt(), tmp_path / "tiny")
    args = [
        "evaluate",
        str(tmp_path / "tiny"),
        "--dataset",
        f"folder:{folder}",
        "--ways",
        "2",
        "--steps",
        "1",
        "--queries",
        "3",
        "--tasks",
        "4",
        "--json",
        "--record",
    ]
    assert main(args) == 0 and main(args) == 0
    printed = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["metrics"]["evaluation"] == [printed]  # recorded once, not once per run
    # A row of the old protocol (queries could be support recordings) is dropped on recording.
    stale = {**printed, "protocol": 1, "steps": 5}
    card["metrics"]["evaluation"].append(stale)
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    assert main(args) == 0
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert [r["protocol"] for r in card["metrics"]["evaluation"]] == [2]


def test_within_group_needs_a_split_with_groups(folder, tmp_path, capsys):
    save(_ckpt(), tmp_path / "tiny")
    args = ["evaluate", str(tmp_path / "tiny"), "--dataset", f"folder:{folder}", "--within-group"]
    assert main(args + ["--queries", "3", "--ways", "2", "--tasks", "2"]) == 3
    assert "no groups" in capsys.readouterr().err


def test_out_keeps_each_result_and_a_rerun_resumes_from_it(folder, tmp_path, capsys):
    save(_ckpt(), tmp_path / "tiny")
    save(_ckpt(seed=1), tmp_path / "other")
    (tmp_path / "retrained").mkdir()
    save(_ckpt(seed=2), tmp_path / "retrained" / "tiny")  # the same model, new weights
    out = tmp_path / "results"

    def run(name, *more):
        args = ["evaluate", str(tmp_path / name), "--dataset", f"folder:{folder}", *more]
        args += ["--ways", "2", "--queries", "3", "--tasks", "3", "--out", str(out)]
        assert main(args) == 0
        capsys.readouterr()
        return json.loads((out / "evaluation.json").read_text())

    first = run("tiny")
    assert len(first) == 1 and len(first[0]["fingerprint"]) == 64
    assert (out / "evaluation.md").read_text().count("| SNN |") == 1
    first[0]["accuracy_mean"] = 0.123  # a result a rerun must take over, not measure again
    (out / "evaluation.json").write_text(json.dumps(first))
    assert run("tiny")[0]["accuracy_mean"] == 0.123
    (out / "evaluation.json").write_text(json.dumps([{**first[0], "protocol": 1}]))
    assert run("tiny")[0]["accuracy_mean"] != 0.123  # another protocol's row: measured again
    five = run("tiny", "--shots", "2")  # another setting of the same weights: added
    assert [(r["shots"], r["accuracy_mean"] == 0.123) for r in five] == [(1, False), (2, False)]
    again = run("tiny")  # a rerun of the first setting keeps the second
    assert sorted(again, key=lambda r: r["shots"]) == five
    assert (out / "evaluation.md").read_text().count("| SNN |") == 2
    other = run("other")  # another model (a baseline on its own): added, the first's rows kept
    assert [r["model"] for r in other] == ["tiny", "tiny", "other"]
    assert other[2]["fingerprint"] != first[0]["fingerprint"]
    retrained = run("retrained/tiny")  # the model's new weights: its old rows dropped
    assert [r["model"] for r in retrained] == ["other", "tiny"]
    assert retrained[1]["fingerprint"] not in {r["fingerprint"] for r in other}
    assert retrained[1]["accuracy_mean"] != 0.123


def test_the_prototype_head_without_a_step_is_the_nearest_class_mean(folder):
    dataset = FolderDataset(folder, fractions=(0.4, 0.3, 0.3))
    ckpt = _ckpt()
    setting = Setting(ways=3, shots=2, steps=0, tasks=20, queries=4, head="prototype")
    r = evaluate(ckpt, dataset, setting)
    sampler = TaskSampler(dataset.split("test"), 3, 2, 4, GEOM, 0)
    accs = []
    for i in range(20):
        task = sampler[i]
        support, query = (
            ckpt.network.features(ckpt.params, torch.from_numpy(x)).detach().numpy()
            for x in (task.support, task.query)
        )
        means = np.stack([support[task.support_labels == c].mean(0) for c in range(3)])
        distances = ((query[:, None, :] - means[None]) ** 2).sum(-1)
        accs.append(np.mean(distances.argmin(1) == task.query_labels))
    assert r["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert r["accuracy_mean"] > 1 / 3 + 2 * r["accuracy_ci95"], r  # random features still tell
    stepped = evaluate(ckpt, dataset, dataclasses.replace(setting, steps=2, bits=8))
    assert stepped["accuracy_mean"] > 1 / 3 + 2 * stepped["accuracy_ci95"], stepped
    with pytest.raises(ValueError, match="head must be one of"):
        evaluate(ckpt, dataset, Setting(ways=3, tasks=1, head="nearest"))


def test_command_evaluates_the_prototype_head_and_old_rows_keep_their_key(folder, tmp_path, capsys):
    save(_ckpt(), tmp_path / "tiny")
    args = ["evaluate", str(tmp_path / "tiny"), "--dataset", f"folder:{folder}", "--head"]
    args += ["prototype", "--steps", "0", "--ways", "2", "--queries", "3", "--tasks", "3"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == "prototype" and out["steps"] == 0
    assert main(args) == 0
    assert "| SNN, prototype head | mixed | float32 | 2 | 1 | 0 |" in capsys.readouterr().out
    proto = _ckpt()
    proto.training = {**proto.training, "recipe": {"head": "prototype"}}
    save(proto, tmp_path / "proto")
    args = ["evaluate", str(tmp_path / "proto"), "--dataset", f"folder:{folder}", "--ways", "2"]
    assert main(args + ["--queries", "3", "--tasks", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == "prototype"  # as it was meta-trained
    both = [*args, "--baseline", str(tmp_path / "tiny"), "--queries", "3", "--tasks", "2"]
    assert main([*both, "--json"]) == 0
    heads = [r["head"] for r in json.loads(capsys.readouterr().out)]
    assert heads == ["prototype", "meta"]  # each model from its own head
    old = {k: v for k, v in out.items() if k != "head"}  # a row written before heads existed
    assert row_key({**old, "head": "meta"}) == row_key(old) != row_key(out)


def test_a_prototypical_network_is_evaluated_at_its_own_steps_too(folder, tmp_path, capsys):
    """A card of 0 inner steps: its grid adds 0 steps to 1 and 5, and one setting defaults to 0."""
    plain, protonet = grid(3), grid(3, model_steps=0)
    assert {s.steps for s in plain} == {1, 5} and len(plain) == 12
    assert {s.steps for s in protonet} == {0, 1, 5} and len(protonet) == 18
    proto = _ckpt()
    proto.inner_steps = 0
    proto.training = {**proto.training, "recipe": {"head": "prototype"}}
    save(proto, tmp_path / "protonet")
    args = ["evaluate", str(tmp_path / "protonet"), "--dataset", f"folder:{folder}", "--ways", "2"]
    assert main(args + ["--queries", "3", "--tasks", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["head"], out["steps"]) == ("prototype", 0)


def test_a_prototype_head_ranks_classes_by_the_distance_to_their_means():
    net = Network(CFG)
    params = net.init(0)
    g = torch.Generator().manual_seed(3)
    support = (torch.rand(4, CFG.bins, 2, *CFG.input_hw, generator=g) < 0.3).float() * 2
    labels = torch.tensor([0, 1, 1, 0])
    head = net.prototype_head(params, support, labels, ways=2)
    features = net.features(params, support).detach()
    means = torch.stack([features[labels == c].mean(0) for c in (0, 1)])
    logits = net.forward(head, support).detach()
    distance = torch.cdist(features, means) ** 2
    shift = logits[:, :2] + distance  # the same for both classes of a row
    assert torch.allclose(shift, shift[:, :1].expand(-1, 2), atol=1e-4)
    assert torch.allclose(logits[:, :2].softmax(1), (-distance).softmax(1), atol=1e-5)
    centred = head["out.weight"][:2].sum(0), head["out.bias"][:2].sum()
    assert all(torch.allclose(v, torch.zeros_like(v), atol=1e-5) for v in centred)
    assert (head["out.weight"][2:] == 0).all() and (head["out.bias"][2:] == 0).all()
    assert all(torch.equal(head[k], v) for k, v in params.items() if not k.startswith("out."))


def test_rows_of_another_dataset_are_kept_apart_and_named(folder, tmp_path, capsys):
    """``--dataset`` other than the card's own is part of a row's key and shown in the table;
    the card's own, named or not, is "" (as in rows written before the field)."""
    ck = _ckpt()
    ck.training = {"dataset": f"folder:{folder}"}
    save(ck, tmp_path / "tiny")
    (tmp_path / "other").symlink_to(folder)
    args = ["evaluate", str(tmp_path / "tiny"), "--ways", "2", "--queries", "3", "--tasks", "2"]
    args += ["--record", "--json"]
    own = [*args, "--dataset", f"folder:{folder}"]
    other = [*args, "--dataset", f"folder:{tmp_path / 'other'}"]
    for command in (args, own, other):
        assert main(command) == 0
    card = json.loads((tmp_path / "tiny.json").read_text())
    rows = card["metrics"]["evaluation"]
    assert [r["dataset"] for r in rows] == ["", f"folder:{tmp_path / 'other'}"]
    assert row_key({k: v for k, v in rows[0].items() if k != "dataset"}) == row_key(rows[0])
    capsys.readouterr()
    assert main([c for c in other if c != "--json"]) == 0
    assert f"| 2 | folder:{tmp_path / 'other'} test |" in capsys.readouterr().out
