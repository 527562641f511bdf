"""fit and the estimators run small networks on one thread for the call, leave PyTorch's
setting alone for large ones or when the caller chose a count, and restore it."""

import pytest
import torch

import probae
from probae import VAE, _threads, evaluate


class _Spy(probae.callbacks.Callback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, state, *args):
        self.seen.append(torch.get_num_threads())


@pytest.fixture
def two_threads(monkeypatch):
    """PyTorch at two threads, as if that were its default at import."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(_threads, "_AT_IMPORT", 2)
    yield
    torch.set_num_threads(previous)


def test_a_small_network_trains_on_one_thread_and_the_callers_setting_is_restored(two_threads):
    vae = VAE((6,), 2)
    spy = _Spy()
    probae.fit(vae, torch.rand(32, 6).bernoulli(), epochs=1, batch_size=8, callbacks=[spy])
    assert set(spy.seen) == {1}
    assert torch.get_num_threads() == 2


def test_a_count_given_or_chosen_by_the_caller_is_kept(two_threads):
    vae, x = VAE((6,), 2), torch.rand(32, 6).bernoulli()
    spy = _Spy()
    probae.fit(vae, x, epochs=1, batch_size=8, callbacks=[spy], threads=2)
    assert set(spy.seen) == {2}
    torch.set_num_threads(3)  # the caller's own choice: not overridden
    spy = _Spy()
    probae.fit(vae, x, epochs=1, batch_size=8, callbacks=[spy])
    assert set(spy.seen) == {3} and torch.get_num_threads() == 3


def test_a_large_network_keeps_pytorchs_threads(two_threads, monkeypatch):
    monkeypatch.setattr(_threads, "_load", lambda: 0.0)  # an idle machine
    big = torch.nn.Linear(4096, 4096)  # 16.8M parameters: past the small-work bound
    with _threads.for_call(None, big, rows=1):
        assert torch.get_num_threads() == 2
    with _threads.for_call(None, torch.nn.Linear(4, 4), rows=10):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        evaluate.elbo(VAE((6,), 2), torch.rand(4, 6).bernoulli(), threads=0)


def test_a_large_network_leaves_cores_busy_with_other_work_to_it(two_threads, monkeypatch):
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 2)
    big = torch.nn.Linear(4096, 4096)
    monkeypatch.setattr(_threads, "_load", lambda: 2.1)  # one core busy besides this one
    with _threads.for_call(None, big, rows=1):
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(_threads, "_load", lambda: 0.9)  # this process alone
    with _threads.for_call(None, big, rows=1):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2
