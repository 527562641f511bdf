"""fit's default optimizer: Adam's update, by the fused kernel where the parameters allow."""

import torch

import probae
from probae.callbacks import Callback
from probae.train import default_optimizer


def _params(device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(5, 3, generator=generator).to(device)),
        torch.nn.Parameter(torch.randn(3, generator=generator).to(device)),
    ]


def test_the_default_is_adam_with_the_fused_kernel_and_adams_update(device):
    ours, reference = _params(device), _params(device)
    initial = [p.detach().clone() for p in ours]
    fused = default_optimizer(ours, lr=0.05)
    plain = torch.optim.Adam(reference, lr=0.05, foreach=False)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"]
    for step in range(25):
        for a, b in zip(ours, reference, strict=True):
            grad = torch.sin(a.detach() * (step + 1))  # the same gradient on both sides
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        plain.step()
    for a, b, start in zip(ours, reference, initial, strict=True):
        assert (a - start).abs().max() > 0.5  # 25 steps of 0.05 moved it
        torch.testing.assert_close(a, b)


def test_parameter_groups_are_accepted(device):
    groups = [{"params": _params(device)[:1]}, {"params": _params(device)[1:], "lr": 0.1}]
    optimizer = default_optimizer(groups, lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.1]
    assert optimizer.defaults["fused"]


def test_a_pytorch_without_the_fused_kernel_gets_the_per_tensor_adam(monkeypatch):
    adam = torch.optim.Adam

    def without_fused(params, fused=None, **options):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be ... supported devices")
        return adam(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", without_fused)
    optimizer = default_optimizer(_params("cpu"), lr=0.01)
    assert isinstance(optimizer, adam) and not optimizer.defaults["fused"]


def test_fit_trains_with_it(device):
    seen = {}

    class Spy(Callback):
        def on_train_begin(self, state):
            seen["optimizer"] = state.optimizer

    model = probae.VAE((6,), 2, hidden=(8,)).to(device)
    x = torch.bernoulli(torch.full((40, 6), 0.3, device=device))
    probae.fit(model, x, epochs=1, batch_size=20, progress=False, callbacks=[Spy()])
    assert seen["optimizer"].defaults["fused"]
    assert seen["optimizer"].param_groups[0]["lr"] == 1e-3
