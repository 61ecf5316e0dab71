"""Session arrays in pages of their own: equal to the heap copies, read-only frames, aligned."""

import numpy as np
import pytest
import torch

from spikeshot.service import pages
from spikeshot.service.sessions import Shot, Weights, in_own_pages


def test_stack_equals_numpy_and_is_read_only():
    rng = np.random.default_rng(0)
    arrays = [rng.random((3, 2, 4, 5)).astype(np.float32) for _ in range(4)]
    out = pages.stack(arrays)
    np.testing.assert_array_equal(out, np.stack(arrays))
    assert out.dtype == np.float32 and not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0, 0, 0, 0] = 1.0


def test_tensors_are_aligned_copies_independent_of_their_source():
    values = {
        "a": torch.randint(-128, 128, (3, 5), dtype=torch.int8),
        "b": torch.randint(-128, 128, (7,), dtype=torch.int8),
        "c": torch.randint(-128, 128, (2, 2, 3), dtype=torch.int8),
    }
    out = pages.tensors(values)
    for k, v in values.items():
        assert torch.equal(out[k], v) and out[k].dtype == v.dtype and out[k].is_contiguous()
        assert out[k].data_ptr() % pages.ALIGN == 0
    values["a"].zero_()
    assert out["a"].abs().sum() > 0
    # float32 weights too
    f = pages.tensors({"w": torch.randn(4, 3), "b": torch.randn(3)})
    assert f["w"].dtype == torch.float32 and f["b"].data_ptr() % pages.ALIGN == 0


def test_session_state_lives_in_one_mapping_per_support_set():
    shots = tuple(Shot(str(i % 2), np.full((2, 2, 3, 3), i, np.float32)) for i in range(3))
    moved = in_own_pages(shots)
    assert [s.label for s in moved] == ["0", "1", "0"]
    for a, b in zip(shots, moved, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
    assert moved[0].frames.base is moved[2].frames.base  # one mapping for the set
    w = Weights.store({"x": torch.tensor([0.5, -0.25])}, bits=8, scales={"x": 1 / 128})
    assert w.tensors["x"].dtype == torch.int8
    assert torch.equal(w.values()["x"], torch.tensor([0.5, -0.25]))
