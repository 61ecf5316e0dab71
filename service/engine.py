"""The engine: everything the service does, in-process and without gRPC.

A robot app can run an ``Engine`` inside its own process; the gRPC servicer only translates
messages to these calls and ``spikeshot.service.errors`` to status codes. Every method is
thread-safe. ``owner`` is the caller's identity (sessions of one owner are invisible to others);
``control`` carries a request's deadline and cancellation (``executor.Control``).

The answers are ``spikeshot.clients.results``' dataclasses, the ones the servicer sends and the
clients read back.

Adapt: the inner loop (``models.fit``) runs from the model's meta-trained initialisation (with the
prototype head, its readout set to the support set's class means) over the session's whole support
set (earlier examples kept unless ``replace_support``), with the session's steps, step size, weight
bits, grid and rounding. Labels map to output units in first-seen order; unused outputs are
masked. The new support set and weights are built aside and committed only when everything
succeeded, so a failed, cancelled or broken Adapt leaves the session exactly as it was.
Adapts of one session in one engine run one after the other; when the session store is shared with
other replicas and one of them committed an Adapt of the same session first, the Adapt starts again
from that version (``ADAPT_ATTEMPTS`` times in all, then ABORTED), so no example is lost. Classify
reads the session's state once, so it answers with one consistent set of weights even while an
Adapt of the same session runs.

Sessions live in the store ``config.session_store`` names (``store.open_store``); the engine only
uses the ``store.SessionStore`` contract.

Model work runs on the bounded ``Executor``; decoding and binning run on the caller's thread as the
stream arrives. Classify calls of one model that wait for a worker together run as one forward pass
(``batching.Batcher``, at most ``config.classify_batch``), each with its own session's weights;
sessions whose hidden layers hold the same weights (those that took no inner step) share them,
and their calls' frames run as one batch through those layers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from spikeshot.clients import results
from spikeshot.clients.results import (
    AdaptResult,
    ModelInfo,
    Prediction,
    SessionInfo,
    Timings,
    WindowPrediction,
)
from spikeshot.events.array import make_events
from spikeshot.events.binning import FrameGeometry
from spikeshot.events.codec import PackedEvents, encode, pack
from spikeshot.models import checkpoint, fit, nir_export
from spikeshot.models.checkpoint import Checkpoint, fingerprint
from spikeshot.models.maml import adapt
from spikeshot.models.network import HEAD, Network
from spikeshot.models.quantize import rounding_seed
from spikeshot.service import allocator, inputs, pages, sessions, windows
from spikeshot.service.batching import Batcher
from spikeshot.service.config import ServerConfig
from spikeshot.service.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    check_text,
    echo,
)
from spikeshot.service.executor import NO_CONTROL, POLL_S, Control, Executor, configure_torch
from spikeshot.service.inputs import Chunk, EventInput, FrameInput, Input, Sample
from spikeshot.service.prepared import Prepared
from spikeshot.service.sessions import Session, Settings, Shot, State, Weights
from spikeshot.service.store import open_store

STREAM_BATCH = 32  # windows of one stream classified in one forward pass
ADAPT_ATTEMPTS = 3  # an Adapt's tries while other replicas commit Adapts of its session first
EXPORT_FORMATS = ("session", "nir")  # what export_session returns: sessions.dump, or a NIR file


@dataclass(frozen=True)
class _Model:
    name: str
    checkpoint: Checkpoint
    network: Network
    params: dict[str, torch.Tensor]
    fingerprint: str
    # sessions' hidden-layer tensors (the stored levels and the float values) by content while a
    # session holds them: sessions that took no inner step (every session of a prototypical
    # network) store and use one, and their Classify calls that wait together run as one batch
    # (``Network.forward_grouped``)
    hidden: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    # the ``Network.prepare`` of each set of those shared hidden tensors, while a session holds it
    preparations: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)

    @property
    def geometry(self) -> FrameGeometry:
        return self.checkpoint.geometry

    def shared(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor of sessions' parameter ``name`` equal to ``tensor`` (its levels or its
        values), a copy of ``tensor`` in pages of its own if none is held."""
        digest = hashlib.blake2b(tensor.detach().numpy().tobytes(), digest_size=16).digest()
        key = (name, tensor.dtype, tuple(tensor.shape), digest)
        held = self.hidden.get(key)
        if held is None:
            held = self.hidden.setdefault(key, pages.tensors({name: tensor})[name])
        return held

    def prepare(self, params: dict):
        """``network.prepare(params)``, made once for all sessions whose hidden layers are the
        same (``shared``) tensors: it depends on nothing else."""
        hidden = tuple(v for k, v in sorted(params.items()) if k not in HEAD)
        key = tuple(map(id, hidden))
        made = self.preparations.get(key)
        if made is None:
            prepared = self.network.prepare(params)
            if prepared is None:  # the ANN prepares nothing
                return None
            made = self.preparations.setdefault(key, _Preparation(prepared, hidden))
        return made


class _Preparation(list):
    """A ``Network.prepare`` list that keeps the tensors it was made of, and so their ids, its
    key in ``_Model.preparations``, alive while a session holds it."""

    def __init__(self, prepared: list, tensors: tuple):
        super().__init__(prepared)
        self.tensors = tensors


class _Query(NamedTuple):
    """One Classify call's work: a session's query frames [bins, 2, H, W] and answer units."""

    session_id: str
    state: State
    frames: np.ndarray
    units: list[int]


def nir_adaptation(settings: Settings, state: State) -> nir_export.Adaptation:
    """An adapted session's share of its NIR export: the weights it classifies with, its classes,
    and its grid when quantized."""
    quantization = None
    if state.weights.scales is not None:
        quantization = {
            "bits": settings.weight_bits,
            "grid": settings.grid,
            "rounding": settings.rounding,
            "scales": state.weights.scales,
        }
    return nir_export.Adaptation(state.weights.values(), state.classes, quantization)


@contextlib.contextmanager
def _holding(lock: threading.Lock, control: Control) -> Iterator[None]:
    """Hold ``lock``, waiting for it while ``control`` lets the request go on."""
    while not lock.acquire(timeout=POLL_S):
        control.check()
    try:
        yield
    finally:
        lock.release()


class Engine:
    """Sessions, adaptation and classification over ``models`` (checkpoints with distinct names;
    the default is ``config.default_model``, else the zoo's Glyphs model when loaded, else the
    first)."""

    def __init__(
        self, models: Sequence[Checkpoint], config: ServerConfig | None = None, *, clock=time.time
    ):
        self.config = config or ServerConfig()
        self._models: dict[str, _Model] = {}
        for ckpt in models:
            if not ckpt.name:
                raise ValueError("every model needs a name (Checkpoint.name)")
            if ckpt.name in self._models:
                raise ValueError(f"two models are named {ckpt.name!r}")
            params = {k: v.detach().float().contiguous() for k, v in ckpt.params.items()}
            self._models[ckpt.name] = _Model(
                ckpt.name, ckpt, ckpt.network, params, fingerprint(ckpt)
            )
        if not self._models:
            raise ValueError("the engine needs at least one model")
        zoo_default = checkpoint.ZOO_DEFAULT
        self.default_model = self.config.default_model or (
            zoo_default if zoo_default in self._models else next(iter(self._models))
        )
        if self.default_model not in self._models:
            raise ValueError(
                f"default_model {self.default_model!r} is not among the models "
                f"{sorted(self._models)}"
            )
        self.executor = Executor(
            self.config.worker_count,
            self.config.queue_limit,
            allocator.Trimmer(self.config.malloc_trim_s),
        )
        self.prepared = Prepared(self.config.prepared_sessions)
        self.batcher = Batcher(self.executor, self.config.classify_batch, self._forward_many)
        self.sessions = open_store(self.config, clock)
        self.sessions.restore(self._admit)

    @classmethod
    def from_config(cls, config: ServerConfig) -> Engine:
        """The server's engine: set torch's thread count (once, here), load the configured
        checkpoints, restore the snapshot directory's sessions and warm up."""
        configure_torch(config.torch_thread_count)
        engine = cls(checkpoint.find(config.models), config)
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """One inner step and one forward pass per model on empty frames, so that the first
        request does not pay torch's one-time set-up of ``torch.func`` (about a second); then
        two events through the event path in both wire layouts, once (the fused numba kernel is
        the process's, loaded on first use: about 10 ms)."""
        for m in self._models.values():
            frames = torch.zeros(1, *m.geometry.shape)
            with torch.no_grad():
                adapt(m.network.forward, m.params, frames, torch.zeros(1, dtype=torch.long))
        geometry = next(iter(self._models.values())).geometry
        width, height = geometry.sensor_width, geometry.sensor_height
        events = make_events([0, 1], [width // 2] * 2, [height // 2] * 2, [0, 1])
        for data in (encode(events), PackedEvents(*pack(events))):
            inputs.query([EventInput(data, width, height)], geometry, 2)

    def close(self) -> None:
        """Stop accepting model work, wait for the running jobs and close the session store."""
        self.executor.close()
        self.sessions.close()

    # -- models and sessions ------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        """Every model, the default first."""
        names = [self.default_model] + [n for n in self._models if n != self.default_model]
        out = []
        for name in names:
            m = self._models[name]
            ck, g = m.checkpoint, m.geometry
            out.append(
                ModelInfo(
                    name=name,
                    is_default=name == self.default_model,
                    card=ck.card(),
                    arch=ck.config.arch,
                    ways=ck.config.ways,
                    bins=g.bins,
                    height=g.height,
                    width=g.width,
                    sensor_width=g.sensor_width,
                    sensor_height=g.sensor_height,
                    window_us=g.window_us,
                    inner_steps=ck.inner_steps,
                    step_size=None if ck.inner_lr else ck.inner_step_size,
                    weight_bits=ck.quantizer.bits if ck.quantizer else 0,
                    parameters=sum(v.numel() for v in ck.params.values()),
                    fingerprint=m.fingerprint,
                )
            )
        return out

    def _model(self, name: str) -> _Model:
        if check_text(name, "model") not in self._models:
            raise NotFound(f"no model {echo(name)}; this server has {sorted(self._models)}")
        return self._models[name]

    def create_session(
        self,
        *,
        owner: str = "",
        model: str | None = None,
        ways: int | None = None,
        inner_steps: int | None = None,
        step_size: float | None = None,
        weight_bits: int | None = None,
        rounding: str | None = None,
        grid: str | None = None,
        seed: int = 0,
        head: str | None = None,
    ) -> SessionInfo:
        """A new session; None (or 0 for ``ways``/``inner_steps``/``step_size``) takes the model
        card's default. ``weight_bits`` 0 means float32 weights. ``head`` defaults to the one the
        model was meta-trained with; the prototype head on a model meta-trained with its own
        readout takes no step by default (the class means alone measured best)."""
        m = self._model(model or self.default_model)
        ck = m.checkpoint
        q = ck.quantizer
        head = head or ck.head
        card_steps = 0 if (head, ck.head) == ("prototype", "meta") else ck.inner_steps
        settings = Settings(
            model=m.name,
            ways=ways or ck.config.ways,
            inner_steps=inner_steps or card_steps,
            step_size=step_size or (None if ck.inner_lr else ck.inner_step_size),
            weight_bits=(q.bits if q else 0) if weight_bits is None else weight_bits,
            rounding=rounding or (q.rounding if q else "nearest"),
            grid=grid or (q.mode if q else "global"),
            seed=seed,
            head=head,
        )
        self._check_settings(settings, m)
        return self._info(self.sessions.create(owner, settings, m.fingerprint))

    def _check_settings(self, settings: Settings, m: _Model) -> None:
        if settings.ways > m.checkpoint.config.ways:
            raise InvalidArgument(
                f"ways={settings.ways} exceeds model {m.name!r}, which has "
                f"{m.checkpoint.config.ways} outputs",
                "ways",
            )
        if settings.inner_steps > self.config.max_inner_steps:
            raise InvalidArgument(
                f"inner_steps={settings.inner_steps} exceeds the server's limit "
                f"of {self.config.max_inner_steps}",
                "inner_steps",
            )
        if settings.step_size is None and not m.checkpoint.inner_lr:
            raise InvalidArgument(
                f"model {m.name!r} has no learned step sizes: give step_size", "step_size"
            )
        unlearned = [k for k in HEAD if k not in m.checkpoint.inner_lr]
        stepped_readout = settings.head == "prototype" and settings.inner_steps > 0
        if settings.step_size is None and stepped_readout and unlearned:
            raise InvalidArgument(
                f"model {m.name!r} has no learned step size for {unlearned}, which steps after "
                "the class means adapt: give step_size",
                "step_size",
            )

    def _info(self, session: Session) -> SessionInfo:
        state = session.state
        return SessionInfo(
            session.id,
            results.Settings(**session.settings.to_dict()),
            state.classes,
            len(state.support),
            state.version,
            session.created,
            session.last_used,
            self.sessions.expires_at(session),
        )

    def get_session(self, session_id: str, *, owner: str = "") -> SessionInfo:
        return self._info(self.sessions.get(owner, session_id))

    def list_sessions(self, *, owner: str = "") -> list[SessionInfo]:
        """``owner``'s sessions, oldest first."""
        return [self._info(s) for s in self.sessions.list(owner)]

    def delete_session(self, session_id: str, *, owner: str = "") -> None:
        self.sessions.delete(owner, session_id)
        self.prepared.drop(session_id)

    def export_session(self, session_id: str, *, owner: str = "", format: str = "session") -> bytes:
        """The session as bytes in ``format`` (``EXPORT_FORMATS``): ``"session"``, its settings,
        labels, support set and weights (``sessions.dump``); ``"nir"``, the NIR graph file of its
        adapted network, the bytes ``spikeshot export-nir`` writes (``_export_nir``)."""
        if format not in EXPORT_FORMATS:
            raise InvalidArgument(
                f"format: unknown format {echo(format)}; expected one of {EXPORT_FORMATS}", "format"
            )
        session = self.sessions.get(owner, session_id)
        return self._export_nir(session) if format == "nir" else sessions.dump(session)

    def _export_nir(self, session: Session) -> bytes:
        """The NIR file (``nir_export.to_bytes``) of an adapted session's network on its model;
        ``FailedPrecondition`` for a model NIR cannot express (the message names the setting that
        would make it exportable) or a session not adapted yet."""
        m = self._model_of(session.settings.model, session.fingerprint)
        try:
            nir_export.check_exportable(m.checkpoint.config, m.name)
        except nir_export.NIRExportError as e:
            raise FailedPrecondition(str(e)) from None
        if session.state.weights is None:
            raise FailedPrecondition(
                f"session {echo(session.id)} is not adapted yet: call Adapt first (a NIR "
                "export holds the adapted network)"
            )
        graph = nir_export.to_nir(m.checkpoint, nir_adaptation(session.settings, session.state))
        return nir_export.to_bytes(graph)

    def import_session(self, data: bytes, *, owner: str = "") -> SessionInfo:
        """A new session of ``owner``'s from ``export_session``'s bytes."""
        try:
            info, settings, state = sessions.load(data)
        except ValueError as e:
            raise InvalidArgument(f"data: {e}", "data") from None
        state = self._admit(settings, info["fingerprint"], state)
        return self._info(self.sessions.create(owner, settings, info["fingerprint"], state))

    def _admit(self, settings: Settings, model_fingerprint: str, state: State) -> State:
        """An imported or restored session's state as this server keeps it, once it passed
        ``_check_restored``: its hidden layers as the ones other sessions hold, as an Adapt's."""
        self._check_restored(settings, model_fingerprint, state)
        if state.weights is None:
            return state
        m, w = self._models[settings.model], state.weights
        return replace(state, weights=Weights.keep(w.tensors, w.scales, m.shared))

    def _model_of(self, name: str, model_fingerprint: str) -> _Model:
        """The model a session was adapted on; ``FailedPrecondition`` when this server does not
        hold it or holds other weights of it (a replica of another configuration)."""
        if name not in self._models:
            raise FailedPrecondition(
                f"the session was adapted on model {echo(name)}, which "
                f"this server does not hold ({sorted(self._models)})"
            )
        m = self._models[name]
        if model_fingerprint != m.fingerprint:
            raise FailedPrecondition(
                f"the session was adapted on other weights of model "
                f"{m.name!r} (fingerprint {echo(model_fingerprint[:12])}..., this "
                f"server's {m.fingerprint[:12]}...)"
            )
        return m

    def _check_restored(self, settings: Settings, model_fingerprint: str, state: State) -> None:
        """That an imported or restored session (as ``sessions.load`` checked it) fits a model of
        this server: settings, support frames, classes, and weights of the adapted parameters, of
        the model's shapes, on the session's grid."""
        m = self._model_of(settings.model, model_fingerprint)
        self._check_settings(settings, m)
        if len(state.support) > self.config.max_support_examples:
            raise ResourceExhausted(
                f"{len(state.support)} support examples exceed the limit of "
                f"{self.config.max_support_examples}"
            )
        for i, shot in enumerate(state.support):
            try:
                inputs.check_frames(
                    shot.frames, m.geometry, self.config.max_events, f"support example {i}"
                )
            except InvalidArgument as e:
                raise InvalidArgument(f"data: {e.message}", "data") from None
        if len(state.classes) > settings.ways:
            raise InvalidArgument(
                f"data: {len(state.classes)} classes exceed {settings.ways} ways", "data"
            )
        if state.weights is not None:
            self._check_weights(settings, m, state.weights)

    def _check_weights(self, settings: Settings, m: _Model, weights: Weights) -> None:
        """That stored weights are those of the parameters the session adapts, of the model's
        shapes, and (when quantized) each scale the step of the session's grid (a readout of class
        means has a grid of its own, from the means)."""
        names, shapes = fit.inner_names(m.checkpoint, settings), m.network.shapes()
        if set(weights.tensors) != set(names):
            raise InvalidArgument(
                f"data: the weights must be those of the parameters model {m.name!r} adapts, "
                f"{echo(sorted(names))}, got {echo(sorted(weights.tensors))}",
                "data",
            )
        for k, v in weights.tensors.items():
            if tuple(v.shape) != shapes[k]:
                raise InvalidArgument(
                    f"data: weight {k!r} has shape {list(v.shape)}, model {m.name!r} takes "
                    f"{list(shapes[k])}",
                    "data",
                )
        grid = fit.scales(m.checkpoint, settings, m.params)  # all but a readout of its own
        if grid is not None:
            for k, scale in weights.scales.items():
                if k in grid and scale != grid[k]:
                    raise InvalidArgument(
                        f"data: scale {scale} of weight {k!r} is not {grid[k]}, the step of the "
                        f"session's {settings.weight_bits}-bit {settings.grid} grid",
                        "data",
                    )

    # -- adaptation -----------------------------------------------------------------------------

    def adapt(
        self,
        session_id: str,
        chunks: Iterable[Chunk],
        *,
        owner: str = "",
        replace_support: bool = False,
        control: Control = NO_CONTROL,
    ) -> AdaptResult:
        """Add the examples of ``chunks`` to the session's support set and adapt it (see the
        module notes). Errors leave the session unchanged."""
        begin = time.perf_counter()
        session = self.sessions.get(owner, session_id)
        m = self._model_of(session.settings.model, session.fingerprint)
        held = 0 if replace_support else len(session.state.support)
        samples = self._samples(chunks, m, held, control)
        new = tuple(Shot(s.label, s.frames) for s in samples)
        with _holding(session.adapting, control):
            for attempt in range(1, ADAPT_ATTEMPTS + 1):
                state, fitted, adapt_ms, queue_ms = self._adapt_once(
                    session, m, new, replace_support, control
                )
                try:
                    self.sessions.commit(session, state)
                    break
                except Aborted:
                    if attempt == ADAPT_ATTEMPTS:
                        raise Aborted(
                            f"session {echo(session_id)} was adapted elsewhere during each of "
                            f"this Adapt's {ADAPT_ATTEMPTS} attempts; nothing was changed, retry"
                        ) from None
                    session = self.sessions.get(owner, session_id)  # the newer version
        timings = Timings(
            decode_ms=sum(s.decode_ms for s in samples),
            bin_ms=sum(s.bin_ms for s in samples),
            queue_ms=queue_ms,
            adapt_ms=adapt_ms,
            total_ms=1000.0 * (time.perf_counter() - begin),
        )
        return AdaptResult(
            session.id,
            fitted.loss_before,
            fitted.loss_after,
            fitted.accuracy,
            len(state.support),
            len(new),
            state.classes,
            state.version,
            session.settings.inner_steps,
            timings,
        )

    def _samples(
        self, chunks: Iterable[Chunk], m: _Model, held: int, control: Control
    ) -> list[Sample]:
        """The examples of an Adapt's stream, read as they arrive; the cap on support examples is
        checked as each one ends (``held``: those the session keeps)."""
        samples = []
        for sample in inputs.examples(chunks, m.geometry, self.config.max_events):
            samples.append(sample)
            self._check_support(held + len(samples))
            control.check()
        if not samples:
            raise InvalidArgument("Adapt received no examples", "example")
        return samples

    def _check_support(self, count: int) -> None:
        cap = self.config.max_support_examples
        if count > cap:
            raise ResourceExhausted(
                f"the session would hold more than {cap} support examples; "
                "adapt with replace_support or start a new session"
            )

    def _adapt_once(
        self,
        session: Session,
        m: _Model,
        new: tuple[Shot, ...],
        replace_support: bool,
        control: Control,
    ) -> tuple[State, fit.Fit, float, float]:
        """The state an Adapt of ``session`` with the examples ``new`` builds from its current
        state (not committed), the fit, its ms, and the ms it waited for a worker."""
        base, settings = session.state, session.settings
        support = sessions.in_own_pages(new if replace_support else base.support + new)
        self._check_support(len(support))  # the stored version may hold more than when we began
        classes = sessions.classes_of(support)
        if len(classes) > settings.ways:
            raise InvalidArgument(
                f"{len(classes)} classes {echo(list(classes))} exceed the "
                f"session's {settings.ways} ways",
                "label",
            )
        version = base.version + 1

        def run():  # on a worker
            start = time.perf_counter()
            fitted = fit.fit(
                m.checkpoint,
                support,
                classes,
                settings,
                seed=rounding_seed(settings.seed, version),
                params=m.params,
                before_step=control.check,  # a cancelled call or a passed deadline stops here
            )
            weights = Weights.store(fitted.params, settings.weight_bits, fitted.scales, m.shared)
            return weights, fitted, 1000.0 * (time.perf_counter() - start)

        (weights, fitted, adapt_ms), queue_ms = self.executor.run(run, control)
        control.check()  # a request stopped by now leaves the session unchanged
        return State(support, classes, weights, version), fitted, adapt_ms, queue_ms

    # -- classification -------------------------------------------------------------------------

    def _adapted(self, owner: str, session_id: str) -> tuple[Session, _Model]:
        session = self.sessions.get(owner, session_id)
        if session.state.weights is None:
            raise FailedPrecondition(
                f"session {echo(session_id)} is not adapted yet: call Adapt first"
            )
        return session, self._model_of(session.settings.model, session.fingerprint)

    @staticmethod
    def _candidates(state: State, candidates: Sequence[str]) -> list[int]:
        """Output units of the answer: every class, or the ``candidates`` (all learned)."""
        if not candidates:
            return list(range(len(state.classes)))
        index = {label: i for i, label in enumerate(state.classes)}
        for label in candidates:
            if check_text(label, "candidates") not in index:
                raise InvalidArgument(
                    f"label {echo(label)} was never seen in Adapt; the session's "
                    f"classes are {echo(list(state.classes))}",
                    "candidates",
                )
        return sorted({index[label] for label in candidates})

    def _ready(self, m: _Model, session_id: str, state: State) -> tuple[dict, object]:
        """The weights of ``state`` and their ``Network.prepare``, made once per version
        (``self.prepared``)."""

        def make():
            params = {**m.params, **state.weights.values()}
            params = {k: v if k in HEAD else m.shared(k, v) for k, v in params.items()}
            return params, m.prepare(params)

        return self.prepared.get(session_id, state.version, make)

    def _forward(
        self, m: _Model, session_id: str, state: State, frames: np.ndarray, units: list[int]
    ):
        """Probabilities [batch, len(units)] with the weights of ``state``; milliseconds."""
        start = time.perf_counter()
        with torch.no_grad():
            params, prepared = self._ready(m, session_id, state)
            logits = m.network.forward(params, torch.from_numpy(frames), prepared)
            probs = torch.softmax(logits[:, units], dim=-1).numpy()
        return probs, 1000.0 * (time.perf_counter() - start)

    def _forward_many(self, model: str, queries: Sequence[_Query]):
        """Each Classify query's probabilities [len(units)], all of model ``model`` in one pass
        (``Network.forward_grouped``), with the pass's milliseconds."""
        start = time.perf_counter()
        m = self._models[model]
        sessions = [self._ready(m, q.session_id, q.state) for q in queries]
        frames = torch.from_numpy(np.stack([q.frames for q in queries]))[:, None]
        logits = m.network.forward_grouped(sessions, frames)[:, 0]
        forward_ms = 1000.0 * (time.perf_counter() - start)
        return [
            (torch.softmax(row[q.units], dim=-1).numpy(), forward_ms)
            for q, row in zip(queries, logits, strict=True)
        ]

    @staticmethod
    def _answer(state: State, units: list[int], probs: np.ndarray) -> tuple[str, dict[str, float]]:
        labels = [state.classes[u] for u in units]
        return labels[int(np.argmax(probs))], dict(zip(labels, map(float, probs), strict=True))

    def classify(
        self,
        session_id: str,
        query: Input | Iterable[Input],
        *,
        owner: str = "",
        candidates: Sequence[str] = (),
        control: Control = NO_CONTROL,
    ) -> Prediction:
        """Classify one query (an input, or the chunks of one) with the session's weights,
        restricted to ``candidates`` when given."""
        begin = time.perf_counter()
        session, m = self._adapted(owner, session_id)
        self._candidates(session.state, candidates)
        if isinstance(query, EventInput | FrameInput):
            query = [query]
        sample = inputs.query(query, m.geometry, self.config.max_events)
        state = session.state  # one consistent set of weights from here on
        units = self._candidates(state, candidates)
        query = _Query(session.id, state, sample.frames, units)
        (probs, forward_ms), queue_ms = self.batcher.run(m.name, query, control)
        label, probabilities = self._answer(state, units, probs)
        timings = Timings(
            decode_ms=sample.decode_ms,
            bin_ms=sample.bin_ms,
            queue_ms=queue_ms,
            forward_ms=forward_ms,
            total_ms=1000.0 * (time.perf_counter() - begin),
        )
        return Prediction(label, probabilities, state.version, sample.events, timings)

    def classify_stream(
        self,
        session_id: str,
        chunks: Iterable[EventInput],
        *,
        owner: str = "",
        window_us: int | None = None,
        hop_us: int | None = None,
        candidates: Sequence[str] = (),
        control: Control = NO_CONTROL,
    ) -> Iterator[WindowPrediction]:
        """Classify a live stream window by window (``windows.Windower``): one prediction per window
        that holds events, each with the session's weights at that moment. The session, settings
        and candidates are checked before this returns; the rest as the iterator is consumed."""
        session, m = self._adapted(owner, session_id)
        self._candidates(session.state, candidates)
        windower = windows.Windower(m.geometry, self.config.max_events, window_us, hop_us)
        return self._stream(owner, session.id, m, windower, chunks, tuple(candidates), control)

    def _stream(self, owner, session_id, m, windower, chunks, candidates, control):
        for data in chunks:
            control.check()
            yield from self._classify_windows(
                owner, session_id, m, windower.push(data), candidates, control
            )
        yield from self._classify_windows(
            owner, session_id, m, windower.finish(), candidates, control
        )

    def _classify_windows(self, owner, session_id, m, windows, candidates, control):
        ready = time.perf_counter()
        for i in range(0, len(windows), STREAM_BATCH):
            batch = windows[i : i + STREAM_BATCH]
            state = self.sessions.get(owner, session_id).state
            units = self._candidates(state, candidates)
            frames = np.stack([w.frames for w in batch])
            (probs, forward_ms), queue_ms = self.executor.run(
                functools.partial(self._forward, m, session_id, state, frames, units), control
            )
            for w, p in zip(batch, probs, strict=True):
                label, probabilities = self._answer(state, units, p)
                timings = Timings(
                    decode_ms=w.decode_ms,
                    bin_ms=w.bin_ms,
                    queue_ms=queue_ms,
                    forward_ms=forward_ms,
                    total_ms=1000.0 * (time.perf_counter() - ready),
                )
                yield WindowPrediction(
                    w.start_us,
                    w.end_us,
                    label,
                    probabilities,
                    w.events,
                    w.complete,
                    state.version,
                    timings,
                )


__all__ = [
    "AdaptResult",
    "Chunk",
    "Engine",
    "EventInput",
    "FrameInput",
    "ModelInfo",
    "Prediction",
    "SessionInfo",
    "Timings",
    "WindowPrediction",
    "fingerprint",
]
