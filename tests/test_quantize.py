import pytest
import torch

from spikeshot.models import Quantizer


@pytest.mark.parametrize("bits", [16, 8, 4, 3, 2])
def test_global_grid_values_and_clamping(bits):
    q = Quantizer(bits=bits)
    step = 2.0 ** -(bits - 1)
    w = torch.linspace(-2, 2, 1001)
    v = q.fake(w, q.scales({"w": w})["w"])
    assert torch.equal(v / step, (v / step).round())  # on the grid
    assert v.min() == -1.0 and v.max() == 1 - step  # clamped at the range ends
    inside = (w > -1) & (w < 1 - step)
    assert (v[inside] - w[inside]).abs().max() <= step / 2 + 1e-7  # nearest


def test_paper_8bit_grid():
    q = Quantizer(bits=8)
    assert q.scales({"w": torch.zeros(1)})["w"] == 1 / 128
    assert (q.qmin, q.qmax, q.int_dtype) == (-128, 127, torch.int8)


def test_per_tensor_scale_covers_each_tensor():
    q = Quantizer(bits=4, mode="per_tensor")
    params = {"a": torch.tensor([0.5, -0.25, 0.1]), "b": torch.tensor([8.0, -3.0])}
    scales = q.scales(params)
    assert scales == {"a": 0.5 / 7, "b": 8.0 / 7}
    for k, w in params.items():
        assert torch.allclose(q.fake(w, scales[k]).abs().max(), w.abs().max())


def test_integer_storage_round_trip_is_exact():
    q = Quantizer(bits=8)
    w = torch.randn(100, generator=torch.Generator().manual_seed(0)) * 0.3
    step = q.scales({"w": w})["w"]
    levels = q.to_int(w, step)
    assert levels.dtype == torch.int8
    assert torch.equal(Quantizer.from_int(levels, step), q.fake(w, step))
    assert torch.equal(q.to_int(Quantizer.from_int(levels, step), step), levels)


def test_stochastic_rounding_is_unbiased_and_seeded():
    q = Quantizer(bits=8, rounding="stochastic")
    w = torch.full((200_000,), 0.3 / 128)  # 0.3 of a step above zero
    step = 1 / 128
    a = q.fake(w, step, torch.Generator().manual_seed(1))
    b = q.fake(w, step, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert set((a * 128).unique().tolist()) == {0.0, 1.0}
    assert abs(float(a.mean()) - float(w.mean())) < 0.01 * step  # E[Q(w)] = w


def test_straight_through_gradient():
    q = Quantizer(bits=4)
    w = torch.tensor([0.1, 0.33, -0.7], requires_grad=True)
    (q.fake(w, 1 / 8) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_requantized_inner_step_limits_the_update():
    q = Quantizer(bits=4)  # step 1/8
    w = torch.tensor([0.25])
    small = q.fake(w - 0.01 * torch.tensor([1.0]), 1 / 8)  # moves less than half a step
    big = q.fake(w - 0.1 * torch.tensor([1.0]), 1 / 8)
    assert torch.equal(small, w)
    assert torch.equal(big, torch.tensor([0.125]))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="bits"):
        Quantizer(bits=1)
    with pytest.raises(ValueError, match="rounding"):
        Quantizer(rounding="up")
    with pytest.raises(ValueError, match="mode"):
        Quantizer(mode="per_channel")
