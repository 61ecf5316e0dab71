"""Convolution of spike trains, exact in 8-bit integers when the weights sit on a fixed-point grid.

The input of a hidden layer is binary spikes. When each output channel's weights are integers in
[-128, 127] times a power of two (the paper's fixed-point grid, or any coarser one),
every product and every sum of the convolution is an integer: int8 inputs and weights with int32
accumulation compute it exactly, and oneDNN runs that on the CPU's integer matrix units (AMX or
VNNI), several times faster than the float32 convolution. The result, scaled back by the power of
two, is the float convolution's exact value (a float32 convolution of the same operands is exact
too: its partial sums are short multiples of the grid step), so the two agree bit for bit. The
gradient is the float convolution's, computed in float.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from spikeshot.models.lif import vmapped

# oneDNN's int8 convolution exists on x86 builds; tests switch it off to compare against float.
INT8 = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.onednn, "qconv2d_pointwise")
    and torch.backends.cpu.get_cpu_capability().startswith("AVX")
)


def grid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Integer levels (float, in [-128, 127]) and a power-of-two step per output channel with
    ``weight == levels * step`` exactly; None when the weights are not on such a grid."""
    w = weight.detach()
    if _levels(w[:1]) is None:  # float weights fail on their first channel: skip the rest
        return None
    return _levels(w)


def _levels(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    dims = tuple(range(1, w.dim()))
    # the finest power-of-two step that keeps every level within [-128, 127]
    need = torch.maximum(w.amax(dim=dims) / 127, -w.amin(dim=dims) / 128)
    mantissa, exponent = torch.frexp(need)
    step = torch.ldexp(torch.ones_like(need), exponent - (mantissa == 0.5).to(exponent.dtype))
    step = torch.where(need > 0, step, torch.ones_like(step))
    levels = w / step.view(-1, *[1] * len(dims))
    if levels.amax() > 127 or levels.amin() < -128 or not torch.equal(levels, levels.round()):
        return None
    return levels, step


Kernel = Callable[[torch.Tensor], torch.Tensor]


def exact_kernel(weight: torch.Tensor, padding: int) -> Kernel | None:
    """A function computing the value of ``conv2d(x, weight, padding=padding)`` exactly for spikes
    ``x`` (0 or 1) [N, C, H, W], channels last: in int8 where available, else in float. None when
    ``weight`` is off a power-of-two grid or vmapped; the caller then keeps its float path."""
    if vmapped(weight):
        return None
    found = grid(weight)
    if found is None:
        return None
    if INT8 and weight.dtype == torch.float32 and weight.device.type == "cpu":
        return _int8_kernel(*found, padding)
    w = weight.detach()
    return lambda x: F.conv2d(x, w, padding=padding)


def conv(x: torch.Tensor, weight: torch.Tensor, kernel: Kernel, padding: int) -> torch.Tensor:
    """``conv2d(x, weight, padding=padding)``: the value from ``kernel`` (``exact_kernel`` of
    ``weight``), the gradient in float, differentiable twice."""
    return _ExactConv.apply(x, weight, kernel, padding)


def _int8_kernel(levels: torch.Tensor, step: torch.Tensor, padding: int):
    pads, ones = [padding, padding], [1, 1]
    packed = torch.ops.onednn.qconv_prepack(
        levels.to(torch.int8), step, 1.0, 0, ones, pads, ones, 1, None
    )
    zero_points = torch.zeros(len(step), dtype=torch.int64)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x8 = x.to(torch.uint8, memory_format=torch.channels_last)
        return torch.ops.onednn.qconv2d_pointwise(
            x8, 1.0, 0, packed, step, zero_points, None, ones, pads, ones, 1, 1.0, 0,
            torch.float32, "none", [], "",
        )

    return kernel


class _ExactConv(torch.autograd.Function):
    """The value from ``kernel``; the gradient of a float convolution, written with differentiable
    operations so that second-order MAML can differentiate through it."""

    @staticmethod
    def forward(x, weight, kernel, padding):
        return kernel(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding = padding

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        pad = [ctx.padding, ctx.padding]
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], pad, [1, 1], False, [0, 0], 1, mask
        )
        return gx, gw, None, None
