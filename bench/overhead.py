"""Overhead of probae's training step against a hand-written PyTorch loop.

Both sides train the same MNIST-sized MLP VAE (encoder 784-400-(2x20), decoder
20-400-784, Bernoulli pixels, standard normal prior) on the same batch of 128
synthetic binary images, with one reparameterized sample per image and Adam:

- **probae**: exactly what :func:`probae.fit` does per batch: its objective's
  (:class:`probae.objectives.ReparamELBO`, Pyro's Trace_ELBO with the loss kept on
  the device) ``differentiable_loss`` under a parameter trace, the finite-loss check
  (``.item()``), backward of the per-point loss and a step of fit's default
  optimizer (:func:`probae.train.default_optimizer`);
- **hand-written**: the same ELBO written out,
  ``log p(x|z) + log p(z) - log q(z|x)`` with ``z = mu + sigma * eps``, its
  ``.item()``, backward and a step of torch's default Adam, on a copy of the same
  networks.

The two sides run interleaved in the same process, after a warm-up; each
figure is the median over repeats of the mean time of ``--steps`` steps. The
probae step is timed with Pyro's argument validation on (Pyro's default) and
off (``pyro.validation_enabled(False)``), and ``probae.fit`` itself is timed on
whole epochs, so that the replica of its step cannot drift from the real loop.
The step is also timed with what fit adds around it (the loss's terms read off
the ELBO's traces, the History and progress-bar callbacks), against the bare
step: the cost of the callbacks and History terms per step.

    python bench/overhead.py                 # cpu, one thread
    python bench/overhead.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.nn.functional import binary_cross_entropy_with_logits

import probae
from probae import VAE, likelihoods, objectives, priors
from probae.callbacks import HistoryRecorder, ProgressBar, TrainingState
from probae.terms import LossTerms
from probae.train import History, _call, _Parameters, default_optimizer

X_DIM, Z_DIM, HIDDEN = 784, 20, 400
LOG_2PI = math.log(2 * math.pi)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ProbaeStep:
    """The body of probae.fit's loop for one batch (see probae/train/step.py)."""

    def __init__(self, vae, lr):
        self.vae = vae
        self.elbo = objectives.make_elbo("elbo")
        self.params = _Parameters(vae)
        self.optim = default_optimizer(self.params.params, lr=lr)

    def __call__(self, x):
        with poutine.trace(param_only=True) as capture:
            loss = self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(value)
        new = self.params.add_from_trace(capture.trace)
        if new:
            self.optim.add_param_group({"params": new})
        self.optim.zero_grad(set_to_none=True)
        (loss / x.shape[0]).backward()
        self.optim.step()
        return value


class ProbaeStepWithCallbacks(ProbaeStep):
    """The same step with what probae.fit adds around it: the loss's terms read off the
    ELBO's traces (probae.terms.LossTerms) and the callbacks fit always calls (the
    History recorder, a disabled progress bar) with them."""

    def __init__(self, vae, lr):
        super().__init__(vae, lr)
        self.recorder = LossTerms(self.elbo)
        self.state = TrainingState(vae, self.optim, History(), epochs=1, steps_per_epoch=1)
        self.hooked = [HistoryRecorder(), ProgressBar(enabled=False)]
        _call(self.hooked, "on_train_begin", self.state)
        _call(self.hooked, "on_epoch_begin", self.state)

    def __call__(self, x):
        value = super().__call__(x)
        self.state.step += 1
        _call(self.hooked, "on_step_end", self.state, value, self.recorder.last, x.shape[0])
        return value


class HandStep:
    """The same single-sample ELBO written directly in PyTorch."""

    def __init__(self, encoder, decoder, lr):
        self.encoder, self.decoder = encoder, decoder
        params = [*encoder.parameters(), *decoder.parameters()]
        self.optim = torch.optim.Adam(params, lr=lr)

    def loss(self, x):
        loc, scale = self.encoder(x)
        eps = torch.empty_like(loc).normal_()
        z = loc + scale * eps
        log_px = -binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - scale.log().sum(-1)
        return -(log_px + log_pz - log_qz).sum()

    def __call__(self, x):
        loss = self.loss(x)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(value)
        self.optim.zero_grad(set_to_none=True)
        (loss / x.shape[0]).backward()
        self.optim.step()
        return value


def added_work_seconds(vae, x, repeats: int = 200) -> float:
    """Seconds per step of only what fit adds around the step: the loss's terms read
    off one step's traces and the callbacks' on_step_end, timed alone (a direct
    figure that the noise of whole steps on a busy machine cannot hide)."""
    step = ProbaeStepWithCallbacks(vae, 1e-3)
    elbo = step.elbo
    model_trace, guide_trace = next(iter(elbo._probae_get_traces(vae.model, vae.guide, (x,), {})))
    recorder = step.recorder
    with torch.no_grad():
        began = time.perf_counter()
        for _ in range(repeats):
            recorder.last = None
            recorder._record(model_trace, guide_trace)
            _call(step.hooked, "on_step_end", step.state, 1.0, recorder.last, x.shape[0])
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return (time.perf_counter() - began) / repeats


def same_noise_losses(vae, hand, x, seed: int = 1) -> tuple:
    """Both negative ELBOs of the batch, each drawing its noise from the same seed:
    with the same networks they are the same number, which is what makes the timing
    a comparison of equal work."""
    with torch.no_grad():
        pyro.set_rng_seed(seed)
        ours = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x).item()
        pyro.set_rng_seed(seed)
        theirs = hand.loss(x).item()
    return ours, theirs


def _time_steps(step, x, steps, device) -> float:
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        step(x)
    _sync(device)
    return (time.perf_counter() - began) / steps


def _time_fit(vae, data, batch_size, epochs, device) -> float:
    """Seconds per step of probae.fit over whole epochs (after one warm-up epoch)."""
    probae.fit(vae, data, epochs=1, batch_size=batch_size, progress=False)
    steps = epochs * math.ceil(len(data) / batch_size)
    _sync(device)
    began = time.perf_counter()
    probae.fit(vae, data, epochs=epochs, batch_size=batch_size, progress=False)
    _sync(device)
    return (time.perf_counter() - began) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for PyTorch (default: 1)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat (50)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (7)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (20)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument(
        "--fit-epochs", type=int, default=3, help="timed epochs of 20 batches for probae.fit (3)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)

    vae = VAE(
        x_shape=(X_DIM,),
        z_dim=Z_DIM,
        prior=priors.StandardNormal(Z_DIM),
        likelihood=likelihoods.Bernoulli(),
        hidden=(HIDDEN,),
    ).to(device)
    hand = HandStep(copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder), args.lr)
    x = torch.bernoulli(torch.full((args.batch_size, X_DIM), 0.3, device=device))

    ours, theirs = same_noise_losses(vae, hand, x)
    agree = abs(ours - theirs) <= 1e-4 * abs(theirs)

    sides = {
        "hand": hand,
        "probae": ProbaeStep(vae, args.lr),
        "probae_novalidate": ProbaeStep(copy.deepcopy(vae), args.lr),
        "probae_callbacks": ProbaeStepWithCallbacks(copy.deepcopy(vae), args.lr),
    }

    def run(name, steps):
        if name == "probae_novalidate":
            with pyro.validation_enabled(False):
                return _time_steps(sides[name], x, steps, device)
        return _time_steps(sides[name], x, steps, device)

    for name in sides:
        run(name, args.warmup)
    times = {name: [] for name in sides}
    ratios = {name: [] for name in sides if name != "hand"}
    for repeat in range(args.repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        measured = {name: run(name, args.steps) for name in order}
        for name, seconds in measured.items():
            times[name].append(seconds)
        for name in ratios:
            ratios[name].append(measured[name] / measured["hand"])

    data = torch.bernoulli(torch.full((20 * args.batch_size, X_DIM), 0.3))
    fit_vae = copy.deepcopy(vae)
    fit_step = _time_fit(fit_vae, data.to(device), args.batch_size, args.fit_epochs, device)

    added = statistics.median(added_work_seconds(copy.deepcopy(vae), x) for _ in range(5))
    median = {name: statistics.median(values) for name, values in times.items()}
    ms = {name: 1e3 * value for name, value in median.items()}
    print(
        f"probae overhead: MLP VAE {X_DIM}-{HIDDEN}-(2x{Z_DIM}), decoder {Z_DIM}-{HIDDEN}-{X_DIM}, "
        f"batch {args.batch_size}, Bernoulli, {device}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, pyro {pyro.__version__}"
    )
    print(f"same ELBO on the same noise: {'yes' if agree else 'NO'} ({ours:.3f} vs {theirs:.3f})")
    print(f"median of {args.repeats} repeats of {args.steps} steps, interleaved:")
    print(f"  hand-written PyTorch step            {ms['hand']:7.3f} ms")
    for name, label in (
        ("probae", "probae step, Pyro validation on "),
        ("probae_novalidate", "probae step, Pyro validation off"),
    ):
        print(
            f"  {label}     {ms[name]:7.3f} ms   ratio {median[name] / median['hand']:.3f} "
            f"(median of per-repeat ratios {statistics.median(ratios[name]):.3f})"
        )
    print(
        f"  probae step + loss terms, History     {ms['probae_callbacks']:7.3f} ms   "
        f"ratio {median['probae_callbacks'] / median['hand']:.3f}"
    )
    print(
        f"  probae.fit, whole epochs, per step    {1e3 * fit_step:7.3f} ms   "
        f"ratio {fit_step / median['hand']:.3f}"
    )
    print(
        f"overhead ratio (probae step / hand-written step): {median['probae'] / median['hand']:.3f}"
    )
    extra = statistics.median(
        [c / p for c, p in zip(times["probae_callbacks"], times["probae"], strict=True)]
    )
    print(
        f"callbacks and History terms per step: {100 * (extra - 1):+.1f}% "
        "(median of per-repeat ratios against the step without them)"
    )
    print(
        f"  that added work timed alone: {1e6 * added:.1f} us per step, "
        f"{100 * added / median['probae']:.2f}% of the probae step"
    )


if __name__ == "__main__":
    main()
