"""The architecture of a network, as its model card records it. Defaults are the paper's.

Input geometry (sensor crop, downsample, window, bins) lives in ``FrameGeometry`` from
``spikeshot.events.binning``; this config holds everything about the network itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ARCHS = ("snn", "ann")
POOLS = ("max", "avg")
RESETS = ("soft", "hard")
# The last hidden layer: spiking (LIF), or a leaky integrator (LI) that never fires, whose
# membrane U = W P + b the readout traces filter instead of spikes.
LAST_LAYERS = ("lif", "li")


@dataclass(frozen=True)
class ModelConfig:
    """Network constants. ``input_hw`` is (height, width) of the frames, ``bins`` their count."""

    arch: str = "snn"
    ways: int = 5
    input_hw: tuple[int, int] = (16, 32)
    bins: int = 100
    burn_in: int = 70
    channels: tuple[int, ...] = (32, 64, 128)
    kernel: int = 5
    pool: int = 2
    pool_kind: str = "max"
    # DECOLLE neuron: Q <- beta Q + (1-beta) gain S_in ; P <- alpha P + (1-alpha) Q ;
    # R <- alpha_rp R - (1-alpha_rp) w_rp S ; U = W P + b + R ; S = H(U).
    alpha: float = 0.95
    beta: float = 0.90
    alpha_rp: float = 0.65
    w_rp: float = 1.0
    input_gain: float = 10.0
    reset: str = "soft"
    last_layer: str = "lif"
    surrogate_slope: float = 10.0
    # The readout's input traces (None: alpha and beta as above). Slower ones make the logits at
    # the last step weigh the whole recording, not mostly its last bins.
    readout_alpha: float | None = None
    readout_beta: float | None = None
    # Event counts per bin are clipped to this before the network (None: no clipping).
    input_clip: float | None = None
    # Initialise the output layer to zero, so a first inner step moves each class toward its
    # support mean (the "zero trick" of later MAML work).
    zero_head: bool = True

    def __post_init__(self):
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.pool_kind not in POOLS:
            problems.append(f"pool_kind must be one of {POOLS}, got {self.pool_kind!r}")
        if self.reset not in RESETS:
            problems.append(f"reset must be one of {RESETS}, got {self.reset!r}")
        if self.last_layer not in LAST_LAYERS:
            problems.append(f"last_layer must be one of {LAST_LAYERS}, got {self.last_layer!r}")
        if self.ways < 2:
            problems.append(f"ways must be >= 2, got {self.ways}")
        if self.bins < 1 or not 0 <= self.burn_in < self.bins:
            problems.append(
                f"need bins >= 1 and 0 <= burn_in < bins, got {self.bins}, {self.burn_in}"
            )
        if self.kernel % 2 != 1:
            problems.append(f"kernel must be odd (same padding), got {self.kernel}")
        h, w = self.input_hw
        div = self.pool ** len(self.channels)
        if h % div or w % div:
            problems.append(f"input_hw {self.input_hw} must be divisible by pool**layers = {div}")
        for name in ("alpha", "beta", "alpha_rp", "readout_alpha", "readout_beta"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                problems.append(f"{name} must be in [0, 1), got {value}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def feature_hw(self) -> tuple[int, int]:
        """Spatial size after the last pooling."""
        div = self.pool ** len(self.channels)
        return self.input_hw[0] // div, self.input_hw[1] // div

    @property
    def features(self) -> int:
        """Inputs of the output layer."""
        h, w = self.feature_hw
        return self.channels[-1] * h * w

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)
