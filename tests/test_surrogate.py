import torch
from torch.autograd import gradcheck, gradgradcheck

from spikeshot.models.surrogate import fast_sigmoid, spike


def _away_from_zero(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    return (u + 0.05 * u.sign()).requires_grad_()


def test_forward_is_heaviside():
    u = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 2.0])
    assert spike(u).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_backward_is_fast_sigmoid_derivative():
    u = torch.tensor([-0.5, 0.0, 0.2, 3.0], requires_grad=True)
    spike(u, slope=10.0).sum().backward()
    assert torch.allclose(u.grad, 1.0 / (10 * u.detach().abs() + 1) ** 2)


def test_slope_is_configurable():
    u = torch.tensor([0.3], requires_grad=True)
    spike(u, slope=2.0).sum().backward()
    assert torch.allclose(u.grad, torch.tensor([1.0 / (2 * 0.3 + 1) ** 2]))


def test_gradcheck_and_gradgradcheck_float64():
    u = _away_from_zero(16)
    # The forward is a step, so its numerical derivative is zero: gradcheck the surrogate's
    # integral, whose derivative the spike passes back (checked equal below), and gradgradcheck
    # the spike itself (its first derivative is smooth away from 0).
    assert gradcheck(fast_sigmoid, (u,))
    assert gradgradcheck(fast_sigmoid, (u,))
    assert gradgradcheck(spike, (u,))
    (g_spike,) = torch.autograd.grad(spike(u).sum(), u)
    (g_sig,) = torch.autograd.grad(fast_sigmoid(u).sum(), u)
    assert torch.equal(g_spike, g_sig)


def test_second_derivative_matches_closed_form():
    u = _away_from_zero(8)
    (g,) = torch.autograd.grad(spike(u).sum(), u, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), u)
    k = 10.0
    expected = -2 * k * u.detach().sign() / (k * u.detach().abs() + 1) ** 3
    assert torch.allclose(h, expected)


def test_vmap_matches_loop():
    u = _away_from_zero(12).detach().reshape(3, 4)
    grad_fn = torch.func.grad(lambda x: spike(x).pow(2).sum() + (spike(x) * x).sum())
    batched = torch.func.vmap(grad_fn)(u)
    looped = torch.stack([grad_fn(row) for row in u])
    assert torch.allclose(batched, looped)
