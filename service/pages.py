"""Long-lived session arrays in memory pages of their own.

A session's support frames and weights live as long as its caller wants; an Adapt's temporaries
(activations, gradients) for milliseconds. Taken from the same heap, each session's arrays land
between the freed temporaries, and the allocator cannot hand those pages back: resident memory
per adapted session was 1.62x its state (``bench/service.py``, 1,000 sessions). Copied instead into
an anonymous memory map of their own, page-aligned and never interleaved with temporaries, they
cost their size (rounded up to a page) and go back to the system as soon as the session drops
them: 1.27x to 1.36x in the same benchmark's later runs.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np
import torch

ALIGN = 64


def _pages(nbytes: int) -> np.ndarray:
    """``nbytes`` zeroed bytes in a private anonymous mapping, freed with the last view of it;
    heap bytes where the system refuses a mapping (e.g. past its limit on mappings)."""
    try:
        return np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=np.uint8)
    except OSError:
        return np.zeros(max(nbytes, 1), dtype=np.uint8)


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)`` as read-only float32, in pages of its own."""
    shape = (len(arrays), *np.shape(arrays[0]))
    size = 4 * int(np.prod(shape))
    out = _pages(size)[:size].view(np.float32).reshape(shape)
    for i, a in enumerate(arrays):
        out[i] = a
    out.flags.writeable = False
    return out


def tensors(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies of ``values``, together in pages of their own (each 64-byte aligned)."""
    offsets, end = {}, 0
    for k, v in values.items():
        offsets[k] = -(-end // ALIGN) * ALIGN
        end = offsets[k] + v.numel() * v.element_size()
    buffer = torch.from_numpy(_pages(end))
    out = {}
    for k, v in values.items():
        size = v.numel() * v.element_size()
        out[k] = buffer[offsets[k] : offsets[k] + size].view(v.dtype).view(v.shape)
        out[k].copy_(v)
    return out
