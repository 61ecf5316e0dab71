"""Fixed-point weights: quantizers, integer storage, and the re-quantizing inner step.

Two grids:
- ``global``: the paper's one grid for the whole network, ``frac_bits`` fractional bits (default
  bits - 1), integers in [-2^(bits-1), 2^(bits-1) - 1]; 8 bits is [-1, 0.992] in steps of 1/128.
  Values outside the range are clamped.
- ``per_tensor``: a symmetric scale per tensor, max|w| / (2^(bits-1) - 1), fixed once from the
  weights it is built on (``scales``) so that every inner step lands on the same grid.

Rounding is to nearest or stochastic (floor(w/step + u), u ~ U[0, 1) from a seeded generator,
unbiased in expectation). ``fake`` returns values on the grid with a straight-through gradient, for
quantization-aware meta-training; ``to_int``/``from_int`` store and restore exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch._C._functorch import is_functorch_wrapped_tensor

MODES = ("global", "per_tensor")
ROUNDINGS = ("nearest", "stochastic")


def rounding_seed(seed: int, step: int) -> int:
    """The seed of stochastic rounding's generator at ``step`` (a meta-training iteration, a
    session's weights version) of a run or session seeded ``seed``."""
    return (seed * 1_000_003 + step) % 2**63


@dataclass(frozen=True)
class Quantizer:
    bits: int = 8
    mode: str = "global"
    rounding: str = "nearest"
    frac_bits: int | None = None

    def __post_init__(self):
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be in 2..16, got {self.bits}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.frac_bits is not None and self.mode != "global":
            raise ValueError("frac_bits applies to the global grid only")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def int_dtype(self) -> torch.dtype:
        return torch.int8 if self.bits <= 8 else torch.int16

    def scales(self, params: dict[str, torch.Tensor]) -> dict[str, float]:
        """The step of each tensor's grid."""
        if self.mode == "global":
            step = 2.0 ** -(self.bits - 1 if self.frac_bits is None else self.frac_bits)
            return {k: step for k in params}
        return {k: max(float(v.detach().abs().max()), 1e-12) / self.qmax for k, v in params.items()}

    @torch.no_grad()
    def _levels(self, w: torch.Tensor, step: float, generator: torch.Generator | None):
        """The levels (float), in place on one fresh buffer: they carry no gradient."""
        x = w / step
        if self.rounding == "nearest":
            x.round_()
        else:
            x.add_(torch.rand(x.shape, generator=generator, dtype=x.dtype)).floor_()
        return x.clamp_(self.qmin, self.qmax)

    def to_int(self, w: torch.Tensor, step: float, generator=None) -> torch.Tensor:
        """Integer levels of ``w`` on the grid of ``step``."""
        return self._levels(w.detach(), step, generator).to(self.int_dtype)

    @staticmethod
    def from_int(levels: torch.Tensor, step: float) -> torch.Tensor:
        """Exact float values of stored levels."""
        return levels.to(torch.float32) * step

    def fake(self, w: torch.Tensor, step: float, generator=None) -> torch.Tensor:
        """``w`` on the grid, with a straight-through (identity) gradient where one is needed."""
        q = self._levels(w, step, generator).mul_(step)
        if (torch.is_grad_enabled() and w.requires_grad) or is_functorch_wrapped_tensor(w):
            return w + (q - w).detach()
        return q

    def fake_all(self, params: dict, scales: dict, generator=None) -> dict[str, torch.Tensor]:
        return {k: self.fake(v, scales[k], generator) for k, v in params.items()}

    def to_dict(self) -> dict:
        return asdict(self)
