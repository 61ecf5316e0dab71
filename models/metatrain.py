"""Meta-training: second-order MAML (first-order as an option), quantization-aware at a chosen bit
width, Adam with a cosine schedule, validation at intervals with a best-on-validation checkpoint,
resumable from its last state, distributed over processes with ``torch.distributed``.

Every task is a pure function of (seed, index), so a resumed or distributed run sees exactly the
tasks an uninterrupted single-process run would. The run directory holds:

- ``state.safetensors`` + ``state.json``: parameters, Adam moments, iteration (the resume point)
- ``best.safetensors`` + ``best.json``: the best checkpoint on meta-validation, with its model card
- ``log.csv``: the curves, and ``curve.png`` drawn from it at each validation
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as tensor_bytes

from spikeshot.events.atomic import write_atomic
from spikeshot.events.binning import FrameGeometry
from spikeshot.models import checkpoint as ckpt_io
from spikeshot.models.config import ModelConfig
from spikeshot.models.datasets import MetaDataset, open_dataset
from spikeshot.models.datasets.episodes import TaskSampler
from spikeshot.models.init import firing_rates, lsuv_init
from spikeshot.models.maml import accuracy, adapt, masked_loss
from spikeshot.models.network import HEADS, Network
from spikeshot.models.quantize import Quantizer, rounding_seed


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; the defaults are the paper's (Stewart and Neftci, arXiv 2201.10777) where it
    gives one."""

    dataset: str = "double_digits"
    ways: int = 5
    # Tasks of varying ways (uniform in ways..max_ways) on a network with model.ways >= max_ways
    # outputs, the unused ones masked; a fraction within_group of them draws all classes from one
    # group (script); val_within_group validates on such tasks (at ``ways``).
    max_ways: int | None = None
    within_group: float = 0.0
    val_within_group: bool = False
    shots: int = 1
    queries: int = 10
    meta_batch: int = 1
    iterations: int = 20000
    outer_lr: float = 2e-3
    inner_steps: int = 1
    inner_lr: float = 1.0
    learn_inner_lr: bool = False
    first_order: bool = False
    # Iterations before this one are first-order (a warm-up before second-order MAML, as MAML++'s
    # derivative-order annealing); 0: none.
    first_order_until: int = 0
    # Where each task's inner loop starts: the meta-trained readout ("meta"), or one set to the
    # support set's class means ("prototype", Proto-MAML; ``Network.prototype_head``), which may
    # take no inner step (inner_steps = 0: the queries' loss through the means alone, as
    # prototypical networks train).
    head: str = "meta"
    # The query logits' factor in the outer loss (metric scaling, Oreshkin et al. 2018): the
    # class means' distances over spiking features are bounded, so their softmax may be too soft
    # to train on. Accuracy, which takes the arg max, does not depend on it.
    logit_scale: float = 1.0
    # Knowledge distillation (Hinton et al. 2015): a trained checkpoint of the same input geometry
    # (a path or a zoo name, e.g. the ANN baseline), whose query logits on each task, from its own
    # inner loop, the outer loss also matches: (1 - w) CE + w T^2 KL(teacher_T || student_T) over
    # the task's classes, w = distill_weight, T = distill_temperature.
    teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    # Activity regularisation (a lower bound on firing, after Zenke and Vogels 2021): the outer
    # loss adds rate_weight * ``rate_floor_loss`` of the SNN's hidden spikes on each task's
    # queries, which keeps units that never fire from dropping out of the features. 0: off; the
    # ANN, which has no spikes, ignores it, so its baseline runs on the same recipe.
    rate_floor: float = 0.0
    rate_weight: float = 1.0
    # Each class of a training task turned by its own random multiple of 90 degrees, a class of
    # its own (``episodes.rotate_classes``): four times the training classes. Square frames only;
    # validation tasks are never turned.
    rotate_classes: bool = False
    bits: int | None = None
    rounding: str = "nearest"
    # The grid the card names for sessions' inner loops (None: float32); the recipe's ``bits``
    # when meta-training was quantization-aware at some width. The paper's main setting: 8 bits.
    session_bits: int | None = 8
    val_every: int = 500
    val_tasks: int = 100
    save_every: int = 50
    seed: int = 0
    init_rate: float = 0.1
    init_membrane_std: float = 0.3
    # A NIR graph (.nir) of this network, e.g. another run's export, whose weights start the run
    # instead of the LSUV initialisation (``nir_export.from_nir``).
    init: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training fields: {sorted(unknown)}")
        if d.get("head", "meta") not in HEADS:
            raise ValueError(f"training.head must be one of {HEADS}, got {d['head']!r}")
        if d.get("head", "meta") == "meta" and d.get("inner_steps", 1) < 1:
            raise ValueError("training.inner_steps must be >= 1 with the meta head")
        if not d.get("logit_scale", 1.0) > 0:
            raise ValueError(f"training.logit_scale must be > 0, got {d['logit_scale']!r}")
        if not 0 <= d.get("distill_weight", 0.5) <= 1:
            raise ValueError(
                f"training.distill_weight must be in [0, 1], got {d['distill_weight']!r}"
            )
        if not d.get("distill_temperature", 4.0) > 0:
            raise ValueError(
                f"training.distill_temperature must be > 0, got {d['distill_temperature']!r}"
            )
        if not 0 <= d.get("rate_floor", 0.0) < 1:
            raise ValueError(f"training.rate_floor must be in [0, 1), got {d['rate_floor']!r}")
        if not d.get("rate_weight", 1.0) >= 0:
            raise ValueError(f"training.rate_weight must be >= 0, got {d['rate_weight']!r}")
        return cls(**d)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: network, input geometry and recipe (the TOML file's three tables)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    geometry: FrameGeometry | None = None
    training: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "geometry": self.geometry.to_dict(),
            "training": asdict(self.training),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        unknown = set(d) - {"model", "geometry", "training"}
        if unknown:
            raise ValueError(f"unknown config tables: {sorted(unknown)}")
        return cls(
            model=ModelConfig.from_dict(d.get("model", {})),
            geometry=FrameGeometry.from_dict(d["geometry"]),
            training=TrainConfig.from_dict(d.get("training", {})),
        )


def task_tensors(task):
    """Torch tensors of an episode ``Task``."""
    return (
        torch.from_numpy(task.support),
        torch.from_numpy(task.support_labels),
        torch.from_numpy(task.query),
        torch.from_numpy(task.query_labels),
    )


class MetaTrainer:
    """One meta-training run in ``run_dir``; ``run()`` resumes where the saved state stopped."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        cache_dir=None,
        progress=True,
        dataset: MetaDataset | None = None,
    ):
        """``dataset`` overrides the one ``cfg.training.dataset`` names (tests use tiny ones)."""
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        t = cfg.training
        most = t.ways if t.max_ways is None else t.max_ways
        if cfg.model.ways < most:
            raise ValueError(
                f"model.ways ({cfg.model.ways}) must be >= the tasks' ways ({most}): "
                "raise model.ways or lower training.ways / training.max_ways"
            )
        self.net = Network(cfg.model)
        self.dataset = dataset or open_dataset(t.dataset, cache_dir=cache_dir, progress=progress)
        self.train_tasks = TaskSampler(
            self.dataset.split("train"),
            t.ways,
            t.shots,
            t.queries,
            cfg.geometry,
            seed=t.seed,
            within_group=t.within_group,
            max_ways=t.max_ways,
            rotate=t.rotate_classes,
        )
        self.val_tasks = TaskSampler(
            self.dataset.split("val"),
            t.ways,
            t.shots,
            t.queries,
            cfg.geometry,
            seed=t.seed + 1,
            within_group=t.val_within_group,
        )
        self.quantizer = None if t.bits is None else Quantizer(t.bits, rounding=t.rounding)
        self.teacher = _teacher(t.teacher, cfg.geometry, most) if t.teacher else None
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._init_state()

    # -- state -----------------------------------------------------------------------------
    def _init_state(self):
        t = self.cfg.training
        if (self.run_dir / "state.json").exists():
            self._load_state()
            return
        if t.init:
            import nir

            from spikeshot.models.nir_export import from_nir

            params = from_nir(nir.read(t.init), self.cfg.model, self.cfg.geometry)
        else:
            sample = torch.cat([task_tensors(self.train_tasks[i])[2] for i in range(2)])
            params = lsuv_init(
                self.net, self.net.init(t.seed), sample, t.init_rate, t.init_membrane_std
            )
        self.params = {k: v.requires_grad_() for k, v in params.items()}
        self.inner_lr = (
            {k: torch.tensor(t.inner_lr, requires_grad=True) for k in self.params}
            if t.learn_inner_lr
            else {}
        )
        self.iteration = 0
        self.best_val = -1.0
        self._make_optimizer()
        (self.run_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    def _make_optimizer(self):
        self.opt = torch.optim.Adam(
            list(self.params.values()) + list(self.inner_lr.values()), lr=self.cfg.training.outer_lr
        )

    def _learnable(self) -> dict[str, torch.Tensor]:
        return {**self.params, **{"inner_lr." + k: v for k, v in self.inner_lr.items()}}

    def save_state(self):
        if self.rank:
            return
        tensors = {}
        for name, p in self._learnable().items():
            tensors["param/" + name] = p.detach().contiguous()
            st = self.opt.state.get(p, {})
            if st:
                tensors["exp_avg/" + name] = st["exp_avg"].contiguous()
                tensors["exp_avg_sq/" + name] = st["exp_avg_sq"].contiguous()
        # The resume point travels inside the tensors' file, so that the one atomic write holds
        # it; state.json repeats it for people and tools.
        meta = {"iteration": self.iteration, "best_val": self.best_val}
        write_atomic(
            self.run_dir / "state.safetensors", tensor_bytes(tensors, {"state": json.dumps(meta)})
        )
        write_atomic(self.run_dir / "state.json", json.dumps(meta) + "\n")

    def _load_state(self):
        path = self.run_dir / "state.safetensors"
        with safe_open(str(path), "pt") as fh:
            inside = (fh.metadata() or {}).get("state")
        # Runs saved before the resume point moved into the tensors' file keep it in state.json.
        meta = json.loads(inside or (self.run_dir / "state.json").read_text())
        tensors = load_file(str(path))
        self.params = {
            k[len("param/") :]: v.requires_grad_()
            for k, v in tensors.items()
            if k.startswith("param/") and not k.startswith("param/inner_lr.")
        }
        self.inner_lr = {
            k[len("param/inner_lr.") :]: v.requires_grad_()
            for k, v in tensors.items()
            if k.startswith("param/inner_lr.")
        }
        self.iteration, self.best_val = meta["iteration"], meta["best_val"]
        self._truncate_log()
        self._make_optimizer()
        for name, p in self._learnable().items():
            if "exp_avg/" + name in tensors:
                self.opt.state[p] = {
                    "step": torch.tensor(float(self.iteration)),
                    "exp_avg": tensors["exp_avg/" + name],
                    "exp_avg_sq": tensors["exp_avg_sq/" + name],
                }

    def _truncate_log(self):
        """Drop log rows written after the saved state: a resumed run logs each iteration once."""
        path = self.run_dir / "log.csv"
        if not path.exists():
            return
        rows = list(csv.reader(path.open(newline="")))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= self.iteration]
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows(keep)

    # -- one step --------------------------------------------------------------------------
    def _lr(self):
        return self.inner_lr if self.inner_lr else self.cfg.training.inner_lr

    def _mask(self, ways: int) -> torch.Tensor | None:
        """The outputs a task of ``ways`` classes uses (None: all of them)."""
        return None if ways == self.cfg.model.ways else torch.arange(self.cfg.model.ways) < ways

    def _adapt(self, params, support, labels, ways, create_graph, generator=None):
        t = self.cfg.training
        mask = self._mask(ways)
        if t.head == "prototype":
            params = self.net.prototype_head(params, support, labels, ways)
        return adapt(
            self.net.forward,
            params,
            support,
            labels,
            steps=t.inner_steps,
            lr=self._lr(),
            quantizer=self.quantizer,
            create_graph=create_graph,
            class_mask=mask,
            generator=generator,
        )

    def step(self) -> dict:
        """One meta-iteration: this process's share of the meta-batch, gradients averaged."""
        t = self.cfg.training
        it = self.iteration
        for group in self.opt.param_groups:  # cosine schedule, a function of the iteration
            group["lr"] = t.outer_lr * 0.5 * (1 + math.cos(math.pi * it / t.iterations))
        self.opt.zero_grad(set_to_none=False)
        losses, accs = [], []
        gen = torch.Generator().manual_seed(rounding_seed(t.seed, it))
        for j in range(self.rank, t.meta_batch, self.world):
            task = self.train_tasks[it * t.meta_batch + j]
            s, sl, q, ql = task_tensors(task)
            mask = self._mask(task.ways)
            second_order = not t.first_order and it >= t.first_order_until
            fast = self._adapt(
                self.params, s, sl, task.ways, create_graph=second_order, generator=gen
            )
            spikes = [] if t.rate_floor else None
            logits = self.net.forward(fast, q, record=spikes)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            loss = masked_loss(logits * t.logit_scale, ql)
            if self.teacher is not None:
                taught = self.teacher(s, sl, q, task.ways)
                loss = (1 - t.distill_weight) * loss + t.distill_weight * distillation_loss(
                    logits[:, : task.ways], taught, t.distill_temperature
                )
            if spikes:
                loss = loss + t.rate_weight * rate_floor_loss(spikes, t.rate_floor)
            (loss / t.meta_batch).backward()
            losses.append(float(loss.detach()))
            accs.append(accuracy(logits.detach(), ql))
        stats = torch.tensor([sum(losses), sum(accs), len(losses)], dtype=torch.float64)
        if self.world > 1:
            for p in self._learnable().values():
                dist.all_reduce(p.grad)
            dist.all_reduce(stats)
        self.opt.step()
        self.iteration += 1
        return {"loss": float(stats[0] / stats[2]), "acc": float(stats[1] / stats[2])}

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> float:
        t = self.cfg.training
        params = {k: v.detach() for k, v in self.params.items()}
        accs = []
        mask = self._mask(t.ways)
        for i in range(t.val_tasks):
            s, sl, q, ql = task_tensors(self.val_tasks[i])
            fast = self._adapt(params, s, sl, t.ways, create_graph=False)
            with torch.no_grad():
                logits = self.net.forward(fast, q)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            accs.append(accuracy(logits, ql))
        return float(np.mean(accs))

    def checkpoint(self, val_acc: float) -> ckpt_io.Checkpoint:
        t = self.cfg.training
        return ckpt_io.Checkpoint(
            config=self.cfg.model,
            geometry=self.cfg.geometry,
            params={k: v.detach() for k, v in self.params.items()},
            inner_lr={k: v.detach() for k, v in self.inner_lr.items()},
            inner_steps=t.inner_steps,
            inner_step_size=t.inner_lr,
            quantizer=self.quantizer
            or (None if t.session_bits is None else Quantizer(t.session_bits, rounding=t.rounding)),
            training={
                "dataset": t.dataset,
                "recipe": asdict(t),
                "iteration": self.iteration,
                "processes": self.world,
            },
            metrics={"val_accuracy": val_acc, "val_tasks": t.val_tasks},
            name=self.run_dir.name,
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self, until: int | None = None) -> None:
        """Train up to iteration ``until`` (default: the recipe's total), saving as it goes."""
        t = self.cfg.training
        until = t.iterations if until is None else min(until, t.iterations)
        log_path = self.run_dir / "log.csv"
        new_log = not log_path.exists()
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=until, initial=self.iteration, desc="meta-train", unit="it")
        with open(log_path, "a", newline="") as fh:
            log = csv.writer(fh)
            if new_log and self.rank == 0:
                log.writerow(["iteration", "loss", "acc", "val_acc", "rates", "seconds"])
            ema = None
            while self.iteration < until:
                t0 = time.perf_counter()
                stats = self.step()
                ema = stats if ema is None else {k: 0.98 * ema[k] + 0.02 * stats[k] for k in ema}
                val = rates = ""
                if self.iteration % t.val_every == 0 or self.iteration == t.iterations:
                    val = self.validate()
                    q = task_tensors(self.val_tasks[0])[2]
                    rates = "/".join(f"{r:.3f}" for r in firing_rates(self.net, self.params, q))
                    if val > self.best_val and self.rank == 0:
                        self.best_val = val
                        ckpt_io.save(self.checkpoint(val), self.run_dir / "best")
                    if self.rank == 0:
                        fh.flush()
                        plot_curve(log_path, self.run_dir / "curve.png")
                if self.rank == 0:
                    log.writerow(
                        [
                            self.iteration,
                            f"{stats['loss']:.4f}",
                            f"{stats['acc']:.4f}",
                            val if val == "" else f"{val:.4f}",
                            rates,
                            f"{time.perf_counter() - t0:.3f}",
                        ]
                    )
                if self.iteration % t.save_every == 0 or self.iteration == until:
                    fh.flush()
                    self.save_state()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{ema['loss']:.3f}",
                        acc=f"{ema['acc']:.3f}",
                        best_val=f"{max(self.best_val, 0):.3f}",
                    )
        if bar is not None:
            bar.close()


class Teacher:
    """A trained checkpoint's query logits on a task, from its own inner loop (its head, steps and
    step sizes, float32), without gradient."""

    def __init__(self, ckpt: ckpt_io.Checkpoint):
        self.ckpt, self.net = ckpt, ckpt.network

    def __call__(self, support, labels, query, ways: int) -> torch.Tensor:
        """Logits [queries, ways] of a ``ways``-way task."""
        ck = self.ckpt
        with torch.no_grad():
            params = ck.params
            if ck.head == "prototype":
                params = self.net.prototype_head(params, support, labels, ways)
            fast = adapt(
                self.net.forward,
                params,
                support,
                labels,
                steps=ck.inner_steps,
                lr=ck.step_sizes,
                class_mask=torch.arange(ck.config.ways) < ways,
            )
            return self.net.forward(fast, query)[:, :ways]


def _teacher(spec: str, geometry: FrameGeometry, ways: int) -> Teacher:
    """The ``training.teacher`` checkpoint, checked against the run: the same input frames and at
    least the tasks' ways."""
    ck = ckpt_io.load(ckpt_io.resolve(spec))
    if ck.geometry != geometry:
        raise ValueError(
            f"training.teacher {spec!r} reads other frames ({ck.geometry}) than this run "
            f"({geometry}): distillation needs the same [geometry]"
        )
    if ck.config.ways < ways:
        raise ValueError(
            f"training.teacher {spec!r} has {ck.config.ways} outputs, fewer than the tasks' {ways}"
        )
    return Teacher(ck)


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float):
    """T^2 KL(softmax(teacher / T) || softmax(logits / T)), averaged over the queries (Hinton et
    al. 2015: the T^2 keeps its gradients on the scale of the cross-entropy's)."""
    target = F.log_softmax(teacher / temperature, -1)
    student = F.log_softmax(logits / temperature, -1)
    kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def rate_floor_loss(spikes: list[torch.Tensor], floor: float) -> torch.Tensor:
    """Mean over the hidden units of ((floor - r) / floor)^2 where a unit's firing rate r (over
    the steps and the batch of each layer's spikes [T, B, C, H, W]) is below ``floor``: 1 for a
    unit that never fires, 0 at or above the floor."""
    rates = torch.cat([s.mean(dim=(0, 1)).flatten() for s in spikes])
    return (F.relu(floor - rates) / floor).square().mean()


def plot_curve(log_path: Path, path: Path, smooth: int = 100) -> None:
    """The run's curves from its ``log.csv``: training query accuracy (a running mean over
    ``smooth`` iterations) and validation accuracy, against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_path.open(newline="")))
    its = np.array([int(r["iteration"]) for r in rows])
    acc = np.array([float(r["acc"]) for r in rows])
    val = [(int(r["iteration"]), float(r["val_acc"])) for r in rows if r["val_acc"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(acc) >= smooth:
        ax.plot(
            its[smooth - 1 :],
            np.convolve(acc, np.ones(smooth) / smooth, "valid"),
            lw=1,
            label=f"training queries (mean of {smooth})",
        )
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("query accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, image.getvalue())
