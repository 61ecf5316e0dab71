"""Meta-training on a tiny configuration: resume after an interruption, and two processes."""

import json
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from toy_models import TOY

from spikeshot.events.array import make_events
from spikeshot.events.binning import FrameGeometry
from spikeshot.models import ModelConfig, snn
from spikeshot.models.checkpoint import Checkpoint, load, save
from spikeshot.models.datasets.base import (
    SPLITS,
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    distinct,
)
from spikeshot.models.datasets.double_digits import DoubleDigits
from spikeshot.models.metatrain import (
    MetaTrainer,
    RunConfig,
    TrainConfig,
    rate_floor_loss,
    task_tensors,
)

MODEL = ModelConfig(
    ways=3,
    input_hw=(8, 16),
    bins=3,
    burn_in=1,
    channels=(4, 4),
    kernel=3,
    alpha=0.8,
    beta=0.6,
    input_gain=1.0,
    input_clip=4.0,
)
GEOM = FrameGeometry(sensor_width=64, sensor_height=32, downsample=4, bins=3, window_us=300000)


def _cfg(**training):
    base = dict(
        ways=3,
        shots=1,
        queries=1,
        meta_batch=2,
        iterations=6,
        val_every=3,
        val_tasks=2,
        save_every=1,
        outer_lr=0.01,
    )
    return RunConfig(MODEL, GEOM, TrainConfig(**{**base, **training}))


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, DoubleDigits(cache, images_per_digit=8, progress=False)


def _trainer(cfg, run_dir, data):
    cache, dataset = data
    return MetaTrainer(cfg, run_dir, progress=False, dataset=dataset)


def test_interrupted_run_resumes_to_the_same_state(tmp_path, tiny_digits, monkeypatch):
    cfg = _cfg()
    straight = _trainer(cfg, tmp_path / "straight", tiny_digits)
    straight.run()

    interrupted = _trainer(cfg, tmp_path / "resumed", tiny_digits)
    real_step = MetaTrainer.step

    def dies_at_4(self):
        if self.iteration == 4:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(MetaTrainer, "step", dies_at_4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    monkeypatch.setattr(MetaTrainer, "step", real_step)
    # A crash between the two files of a save leaves state.json behind: the resume point is the
    # one inside the tensors' file.
    (tmp_path / "resumed" / "state.json").write_text('{"iteration": 2, "best_val": 0.0}')
    resumed = _trainer(cfg, tmp_path / "resumed", tiny_digits)
    assert resumed.iteration == 4
    resumed.run()
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k]), k
    for k in straight.params:
        a, b = straight.opt.state[straight.params[k]], resumed.opt.state[resumed.params[k]]
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )
    log = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert (tmp_path / "resumed" / "best.safetensors").exists()


def test_quantization_aware_first_order_run_logs_validation(tmp_path, tiny_digits):
    tr = _trainer(_cfg(first_order=True, bits=8), tmp_path / "run", tiny_digits)
    tr.run()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0] == "iteration,loss,acc,val_acc,rates,seconds"
    val_rows = [r.split(",") for r in rows[1:] if r.split(",")[3]]
    assert [r[0] for r in val_rows] == ["3", "6"]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["metrics"]["val_accuracy"] == pytest.approx(
        max(float(r[3]) for r in val_rows), abs=1e-4
    )
    assert best["quantization"]["bits"] == 8 and best["training"]["recipe"]["bits"] == 8
    assert (tmp_path / "run" / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_a_first_order_warm_up_runs_before_second_order(tmp_path, tiny_digits, monkeypatch):
    trainer = _trainer(_cfg(first_order_until=2, iterations=4), tmp_path / "run", tiny_digits)
    orders = []
    adapt = trainer._adapt

    def recorded(*args, create_graph, **kwargs):
        orders.append(create_graph)
        return adapt(*args, create_graph=create_graph, **kwargs)

    monkeypatch.setattr(trainer, "_adapt", recorded)
    for _ in range(4):
        trainer.step()
    assert orders == [False] * 4 + [True] * 4  # iterations 0, 1 first-order; two tasks each


class PatternSplit(MetaSplit):
    """Class c: a fixed pattern of 6 pixels firing ON events, each pixel seen with probability 0.7,
    under 40 OFF events at random pixels. Features of a random network mix the two channels;
    meta-training has to learn to look at the ON channel."""

    sensor = Sensor(8, 8)

    def __init__(self, seed: int, n: int):
        self.seed, self.classes = seed, [f"pattern{seed}-{c}" for c in range(n)]

    def draw(self, c, count, rng):
        picks = distinct(20, count, rng, self.classes[c])
        return [Recording(self._recording(c, int(i)), ((c, int(i)),)) for i in picks]

    def _recording(self, c: int, i: int) -> np.ndarray:
        pattern = np.random.default_rng([self.seed, c]).choice(64, 6, replace=False)
        rng = np.random.default_rng([self.seed, c, i])
        on = pattern[rng.random(6) < 0.7].repeat(3)
        pix = np.concatenate([on, rng.integers(0, 64, 40)])
        p = np.arange(len(pix)) < len(on)
        t = rng.integers(0, 3000, len(pix))
        order = np.argsort(t)
        return make_events(t[order], pix[order] % 8, pix[order] // 8, p[order])


class Patterns(MetaDataset):
    name = "patterns"

    def split(self, name):
        return PatternSplit(SPLITS.index(name), 30 if name == "train" else 10)


def test_meta_training_beats_its_starting_point_on_unseen_classes(tmp_path):
    """80 meta-iterations on a task a random network half solves. Measured (seeds 0, 1, 2): 0.63 ->
    0.76, 0.52 -> 0.82, 0.69 -> 0.80 on 40 validation tasks of unseen classes (chance 0.33)."""
    model = replace(TOY, bins=3, input_clip=4.0)
    geometry = FrameGeometry(sensor_width=8, sensor_height=8, bins=3, window_us=3000)
    recipe = TrainConfig(
        ways=3,
        shots=1,
        queries=4,
        meta_batch=2,
        iterations=80,
        outer_lr=0.01,
        val_every=1000,
        val_tasks=40,
        save_every=1000,
    )
    tr = MetaTrainer(
        RunConfig(model, geometry, recipe), tmp_path, progress=False, dataset=Patterns()
    )
    before = tr.validate()
    tr.run()
    after = tr.validate()
    assert after >= before + 0.08 and after >= 0.7, (before, after)


def test_rotated_classes_turn_training_tasks_only(tmp_path, tiny_digits):
    """``training.rotate_classes`` turns the classes of training tasks (their names record the
    turn), never those of validation; on frames that are not square it is a clear error."""
    model = replace(TOY, bins=3, input_clip=4.0)
    geometry = FrameGeometry(sensor_width=8, sensor_height=8, bins=3, window_us=3000)
    recipe = TrainConfig(ways=3, shots=1, queries=1, rotate_classes=True, val_tasks=2)
    tr = MetaTrainer(
        RunConfig(model, geometry, recipe), tmp_path, progress=False, dataset=Patterns()
    )
    names = [n for i in range(10) for n in tr.train_tasks[i].class_names]
    assert any("@" in n for n in names) and not all("@" in n for n in names)
    assert not any("@" in n for i in range(10) for n in tr.val_tasks[i].class_names)
    with pytest.raises(ValueError, match="square frames, this geometry's are 8x16"):
        _trainer(_cfg(rotate_classes=True), tmp_path / "wide", tiny_digits)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, run_dir, cache, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    dataset = DoubleDigits(cache, images_per_digit=8, progress=False)
    tr = MetaTrainer(_cfg(), run_dir, progress=False, dataset=dataset)
    snapshots = []
    for _ in range(3):
        tr.step()
        snapshots.append({k: v.detach().clone() for k, v in tr.params.items()})
    torch.save(snapshots, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_hold_identical_parameters_after_each_step(tmp_path, tiny_digits):
    cache, dataset = tiny_digits
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(tmp_path / "ddp"), str(cache), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    single = MetaTrainer(_cfg(), tmp_path / "single", progress=False, dataset=dataset)
    for step in range(3):
        single.step()
        for k in a[step]:
            assert torch.equal(a[step][k], b[step][k]), (step, k)
            # each process ran half the meta-batch; together they equal one process running all
            assert torch.allclose(a[step][k], single.params[k], atol=1e-6), (step, k)


def test_the_ann_baseline_trains_and_validates_on_the_same_recipe(tmp_path, tiny_digits):
    from dataclasses import replace

    cfg = _cfg(iterations=3)
    cfg = RunConfig(replace(cfg.model, arch="ann"), cfg.geometry, cfg.training)
    tr = _trainer(cfg, tmp_path / "ann", tiny_digits)
    tr.run()
    last = (tmp_path / "ann" / "log.csv").read_text().splitlines()[-1].split(",")
    assert last[0] == "3" and 0.0 <= float(last[3]) <= 1.0 and last[4] == ""


def test_tasks_of_varying_ways_train_with_the_unused_outputs_masked(tmp_path, tiny_digits):
    cfg = _cfg(ways=2, max_ways=3, iterations=4, val_every=2)
    trainer = _trainer(cfg, tmp_path / "run", tiny_digits)
    assert {trainer.train_tasks[i].ways for i in range(30)} == {2, 3}
    head = {k: v.detach().clone() for k, v in trainer.params.items() if k.startswith("out")}
    trainer.run()
    assert trainer.iteration == 4
    # 2-way validation tasks on 3 outputs: the third output is masked, never predicted.
    assert trainer._mask(2).tolist() == [True, True, False]
    assert trainer._mask(3) is None
    assert any(not torch.equal(head[k], trainer.params[k]) for k in head)
    with pytest.raises(ValueError, match="model.ways \\(3\\) must be >= the tasks' ways \\(4\\)"):
        _trainer(_cfg(ways=2, max_ways=4), tmp_path / "bad", tiny_digits)


def test_a_run_starts_from_an_exported_nir_graph(tmp_path, tiny_digits):
    """``training.init``: a graph ``export-nir`` wrote of this network starts the run with its
    weights exactly; a graph of other neuron constants is refused, naming the node."""
    nir = pytest.importorskip("nir")
    from spikeshot.models.nir_export import NIRImportError, to_bytes, to_nir

    model = replace(MODEL, pool_kind="avg")
    first = _trainer(RunConfig(model, GEOM, _cfg().training), tmp_path / "a", tiny_digits)
    first.run()
    graph = tmp_path / "start.nir"
    weights = {k: v.detach() for k, v in first.params.items()}
    graph.write_bytes(to_bytes(to_nir(Checkpoint(model, GEOM, weights))))
    start = replace(_cfg().training, init=str(graph))
    second = _trainer(RunConfig(model, GEOM, start), tmp_path / "b", tiny_digits)
    assert second.iteration == 0
    assert all(torch.equal(second.params[k].detach(), weights[k]) for k in weights)
    other = RunConfig(replace(model, beta=0.5), GEOM, start)
    with pytest.raises(NIRImportError, match="node 'layer0_q': tau differs"):
        _trainer(other, tmp_path / "c", tiny_digits)
    assert nir.read(graph).nodes["readout"].weight.shape == (MODEL.ways, model.features)


@pytest.mark.parametrize("steps", [1, 0])
def test_a_prototype_head_run_trains_the_features_and_never_the_readout(
    tmp_path, tiny_digits, steps
):
    """``training.head = "prototype"``: every task's inner loop starts from the support set's
    class means, so the outer loop moves the convolutions (through the means, second order, or
    with no step at all, as prototypical networks train) and leaves the meta-trained readout where
    it started; the card records the head."""
    cfg = _cfg(ways=2, max_ways=3, iterations=3, head="prototype", inner_steps=steps)
    trainer = _trainer(cfg, tmp_path / "run", tiny_digits)
    start = {k: v.detach().clone() for k, v in trainer.params.items()}
    trainer.run()
    moved = {k for k in start if not torch.equal(start[k], trainer.params[k])}
    assert moved == {k for k in start if k.startswith("conv")}
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["training"]["recipe"]["head"] == "prototype"
    with pytest.raises(ValueError, match="training.head must be one of"):
        TrainConfig.from_dict({"head": "nearest"})
    with pytest.raises(ValueError, match="inner_steps must be >= 1 with the meta head"):
        TrainConfig.from_dict({"inner_steps": 0})
    assert TrainConfig.from_dict({"inner_steps": 0, "head": "prototype"}).inner_steps == 0


def test_the_logit_scale_multiplies_the_query_logits_in_the_outer_loss(tmp_path, tiny_digits):
    """Metric scaling: the first step's loss is the cross-entropy of the scaled logits of its
    tasks' queries, which the same trainer's logits give, scaled here by hand."""
    cfg = _cfg(head="prototype", inner_steps=0, logit_scale=4.0, meta_batch=1)
    trainer = _trainer(cfg, tmp_path / "run", tiny_digits)
    s, sl, q, ql = task_tensors(trainer.train_tasks[0])
    with torch.no_grad():
        fast = trainer.net.prototype_head(trainer.params, s, sl, 3)
        expected = torch.nn.functional.cross_entropy(4.0 * trainer.net.forward(fast, q), ql)
        unscaled = torch.nn.functional.cross_entropy(trainer.net.forward(fast, q), ql)
    loss = trainer.step()["loss"]
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(unscaled)) > 1e-3  # the scale is visible in the loss
    with pytest.raises(ValueError, match="training.logit_scale must be > 0, got 0"):
        TrainConfig.from_dict({"logit_scale": 0})


def test_distillation_matches_the_teachers_query_logits(tmp_path, tiny_digits):
    """``training.teacher``: the outer loss is (1 - w) CE + w T^2 KL to the teacher's logits on the
    same task. A teacher that is the student's own start gives a zero KL and no gradient (to
    rounding), so with w = 1 the first step has nothing to follow, and with w = 0.5 its loss is
    half the cross-entropy; a teacher of other frames is refused by name."""
    cfg = _cfg(head="prototype", inner_steps=0, meta_batch=1)
    start = _trainer(cfg, tmp_path / "plain", tiny_digits)
    save(start.checkpoint(0.0), tmp_path / "teacher")
    plain_loss = start.step()["loss"]
    plain_grad = _largest_gradient(start)
    taught = replace(cfg.training, teacher=str(tmp_path / "teacher"), distill_weight=1.0)
    trainer = _trainer(replace(cfg, training=taught), tmp_path / "taught", tiny_digits)
    assert all(
        torch.equal(trainer.params[k], v) for k, v in load(tmp_path / "teacher").params.items()
    )
    assert trainer.step()["loss"] == pytest.approx(0.0, abs=1e-6)
    assert plain_grad > 1e-3
    assert _largest_gradient(trainer) < 1e-5 * plain_grad
    half = replace(taught, distill_weight=0.5)
    trainer = _trainer(replace(cfg, training=half), tmp_path / "half", tiny_digits)
    assert trainer.step()["loss"] == pytest.approx(plain_loss / 2, rel=1e-5)
    other = replace(
        cfg, geometry=replace(GEOM, downsample=2), model=replace(MODEL, input_hw=(16, 32))
    )
    with pytest.raises(ValueError, match="distillation needs the same"):
        _trainer(replace(other, training=taught), tmp_path / "other", tiny_digits)
    with pytest.raises(ValueError, match="training.distill_weight must be in"):
        TrainConfig.from_dict({"distill_weight": 1.5})


def test_the_rate_floor_adds_the_hidden_units_shortfall_to_the_outer_loss(tmp_path, tiny_digits):
    """``training.rate_floor``: the first step's loss is the queries' cross-entropy plus
    rate_weight times the mean squared shortfall of each hidden unit's firing rate below the
    floor, relative to it, over the queries' steps after the burn-in (here from
    ``snn.hidden_spikes``, which runs every step); the ANN has no spikes and takes the plain
    cross-entropy."""
    floor, weight = 0.5, 2.0
    cfg = _cfg(head="prototype", inner_steps=0, meta_batch=1, rate_floor=floor, rate_weight=weight)
    trainer = _trainer(cfg, tmp_path / "run", tiny_digits)
    s, sl, q, ql = task_tensors(trainer.train_tasks[0])
    with torch.no_grad():
        fast = trainer.net.prototype_head(trainer.params, s, sl, 3)
        ce = torch.nn.functional.cross_entropy(trainer.net.forward(fast, q), ql)
        spikes = snn.hidden_spikes(trainer.params, q, MODEL)
    rates = torch.cat([x[MODEL.burn_in :].mean(dim=(0, 1)).flatten() for x in spikes])
    shortfall = ((floor - rates).clamp(min=0) / floor).square().mean()
    assert 0 < float(shortfall) < 1
    assert trainer.step()["loss"] == pytest.approx(float(ce + weight * shortfall), rel=1e-5)

    ann = replace(cfg, model=replace(MODEL, arch="ann"))
    trainer = _trainer(ann, tmp_path / "ann", tiny_digits)
    with torch.no_grad():
        fast = trainer.net.prototype_head(trainer.params, s, sl, 3)
        ce = torch.nn.functional.cross_entropy(trainer.net.forward(fast, q), ql)
    assert trainer.step()["loss"] == pytest.approx(float(ce), rel=1e-5)
    with pytest.raises(ValueError, match=r"training.rate_floor must be in \[0, 1\), got 1.5"):
        TrainConfig.from_dict({"rate_floor": 1.5})
    with pytest.raises(ValueError, match="training.rate_weight must be >= 0, got -1"):
        TrainConfig.from_dict({"rate_weight": -1})


def test_the_rate_floor_loss_is_one_for_a_silent_unit_and_zero_at_the_floor():
    silent, at_floor = torch.zeros(4, 2, 1, 1, 1), torch.zeros(4, 2, 1, 1, 1)
    at_floor[0, :] = 1.0  # fires in a quarter of the steps
    assert float(rate_floor_loss([silent], 0.25)) == 1.0
    assert float(rate_floor_loss([at_floor], 0.25)) == 0.0
    assert float(rate_floor_loss([silent, at_floor], 0.25)) == 0.5


def _largest_gradient(trainer) -> float:
    """The largest gradient entry of the last step (the readout set from the means has none)."""
    return max(float(p.grad.abs().max()) for p in trainer.params.values() if p.grad is not None)
