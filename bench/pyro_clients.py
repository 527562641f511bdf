"""Pyro's own example pairs, unchanged, trained and measured through probae.

Runs the model/guide pairs of Pyro's ``examples/vae/vae.py``, ``examples/vae/vae_comparison.py``,
``examples/cvae/cvae.py`` and ``examples/vae/ss_vae_M2.py`` (imported from a checkout of
Pyro's examples, ``--clients``; their plotting imports are stubbed) through
:func:`probae.fit` and :mod:`probae.evaluate`, and beside each the figure Pyro's own recipe gives. vae, vae_comparison and cvae need no
adapter; ss_vae_M2 runs twice, as Pyro's pair alone (no adapter) and with its recipe's
auxiliary classifier loss (an adapter that runs both programs in one):

- vae, vae_comparison: trained by probae.fit from one initialization and by Pyro's SVI
  loop from a copy of it (same data, batch size, learning rate and epochs); reported: the
  test ELBO by probae.evaluate.elbo and by Pyro's Trace_ELBO on the probae-trained pair,
  probae's IWAE estimate of log p(x), and Pyro's Trace_ELBO on the Pyro-trained twin;
- cvae: the conditional ELBO of the output quadrants (10 particles), by probae and by
  Pyro's Trace_ELBO on the same pair and weights, trained on its own ``(xs, ys)`` loader;
- ss_vae_M2: test accuracy after probae.fit's one run over labelled and unlabelled
  points, and after Pyro's recipe (three SVI losses stepped in turn) on the same budget;
  and its pair alone, on alternating batches, with its ELBO against TraceEnum_ELBO's.

It is a script, not a test: about ten minutes on two CPU cores at the defaults::

    python bench/pyro_clients.py --clients ../shared/clients/pyro-examples/examples \\
        --root ../shared/data --train 10000 --test 1000 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import time
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from pyro.contrib.autoname import scope
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.poutine.messenger import Messenger

import probae
from probae import batches, data, evaluate

ROOT = Path(__file__).resolve().parents[1]


def import_clients(folder: Path):
    """Imports Pyro's example modules as they are; only visdom (absent here) is stubbed."""
    sys.modules.setdefault("visdom", types.SimpleNamespace(Visdom=None))
    sys.path[:0] = [str(folder / "vae"), str(folder)]
    return {
        "vae": importlib.import_module("vae"),
        "vae_comparison": importlib.import_module("vae_comparison"),
        "ss_vae_M2": importlib.import_module("ss_vae_M2"),
        "cvae": importlib.import_module("cvae.cvae"),
        "cvae_baseline": importlib.import_module("cvae.baseline"),
        "cvae_mnist": importlib.import_module("cvae.mnist"),
    }


def pyro_svi_train(model, guide, x, epochs, batch_size, lr, loss=None):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss or Trace_ELBO())
    for _ in range(epochs):
        for rows in torch.randperm(x.shape[0]).split(batch_size):
            svi.step(x[rows])


def pyro_elbo(model, guide, *args, particles=10):
    """Pyro's own figure: -Trace_ELBO(num_particles) per point."""
    with torch.no_grad():
        return -Trace_ELBO(num_particles=particles).loss(model, guide, *args) / args[0].shape[0]


def row_vae(clients, name, train, test, args):
    """vae.py (an nn.Module's bound methods) and vae_comparison.py (a plain object whose
    methods call pyro.module): no adapter."""
    if name == "vae":
        pair_of = lambda m: (m.model, m.guide)  # noqa: E731
        made = clients["vae"].VAE()
    else:
        impl = clients["vae_comparison"].PyroVAEImpl
        made = impl.__new__(impl)  # its constructor wants data loaders; the pair does not
        clients["vae_comparison"].VAE.__init__(made, args, None, None)
        pair_of = lambda m: (m.model, m.guide)  # noqa: E731
    twin = copy.deepcopy(made)
    pyro.clear_param_store()
    began = time.perf_counter()
    probae.fit(pair_of(made), train, epochs=args.epochs, batch_size=256, lr=1e-3, seed=0)
    seconds = time.perf_counter() - began
    elbo = evaluate.elbo(pair_of(made), test, num_particles=10).mean().item()
    ll = evaluate.log_likelihood(pair_of(made), test, num_samples=args.num_samples).mean
    theirs_same = pyro_elbo(*pair_of(made), test)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    began = time.perf_counter()
    pyro_svi_train(*pair_of(twin), train, args.epochs, 256, 1e-3)
    pyro_seconds = time.perf_counter() - began
    theirs = pyro_elbo(*pair_of(twin), test)
    pyro.clear_param_store()
    return {
        "client": f"examples/vae/{name}.py",
        "adapter": "none",
        "numbers": {"probae_elbo": elbo, "pyro_elbo_same_weights": theirs_same, "iwae": ll},
        "probae": f"ELBO {elbo:.2f}, IWAE({args.num_samples}) {ll:.2f} ({seconds:.0f} s)",
        "pyro": f"Trace_ELBO same weights {theirs_same:.2f}; SVI-trained twin {theirs:.2f} "
        f"({pyro_seconds:.0f} s)",
    }


def quadrant_data(clients, images):
    mask = clients["cvae_mnist"].MaskImages(num_quadrant_inputs=1)
    xs, ys = [], []
    for image in images.reshape(-1, 28, 28):
        sample = mask({"original": image})
        xs.append(sample["input"])
        ys.append(sample["output"])
    return torch.stack(xs).reshape(-1, 784), torch.stack(ys).reshape(-1, 784)


def row_cvae(clients, train, test, args):
    """cvae.py as it is: its pair takes ``(xs, ys)`` batches from its own loader, and scores
    the masked pixels by boolean-mask indexing, which does not broadcast over a sample
    dimension, so the estimators draw its samples one at a time (with a notice)."""
    module = clients["cvae"]
    xs, ys = quadrant_data(clients, train)
    txs, tys = quadrant_data(clients, test)
    baseline = clients["cvae_baseline"].BaselineNet(500, 500)
    optim = torch.optim.Adam(baseline.parameters(), lr=1e-3)
    loss_fn = clients["cvae_baseline"].MaskedBCELoss()
    for _ in range(args.epochs):  # the baseline's own training, as in cvae/baseline.py
        for rows in torch.randperm(xs.shape[0]).split(128):
            optim.zero_grad()
            loss_fn(baseline(xs[rows]), ys[rows]).backward()
            optim.step()

    cvae = module.CVAE(200, 500, 500, baseline)
    pair = (cvae.model, cvae.guide)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xs, ys),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    test_batches = list(zip(txs.split(100), tys.split(100), strict=True))
    pyro.clear_param_store()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one-at-a-time notices
        probae.fit(pair, loader, epochs=args.epochs, seed=0)
        seconds = time.perf_counter() - began
        ours = evaluate.elbo(pair, test_batches, num_particles=10)
        ll = evaluate.log_likelihood(pair, test_batches, num_samples=args.num_samples)
    theirs = pyro_elbo(cvae.model, cvae.guide, txs, tys)
    pyro.clear_param_store()
    return {
        "client": "examples/cvae/cvae.py",
        "numbers": {
            "probae_elbo": ours.mean().item(),
            "pyro_elbo_same_weights": theirs,
            "iwae": ll.mean,
        },
        "adapter": "none (its own (xs, ys) loader; samples drawn one at a time)",
        "probae": f"ELBO {ours.mean().item():.2f}, IWAE({args.num_samples}) {ll.mean:.2f} "
        f"({seconds:.0f} s)",
        "pyro": f"Trace_ELBO(10), same weights {theirs:.2f}",
    }


class _RenamePlates(Messenger):
    """Prefixes the plate names a site sees, so that two calls of one program (each with
    its own pyro.plate("data")) give two plates of their own in one trace."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def _process_message(self, msg):
        if msg["type"] == "sample":
            msg["cond_indep_stack"] = tuple(
                frame._replace(name=f"{self.prefix}/{frame.name}")
                for frame in msg["cond_indep_stack"]
            )


@contextmanager
def _part(prefix):
    with scope(prefix=prefix), _RenamePlates(prefix):
        yield


def row_m2(clients, args):
    """ss_vae_M2.py's SSVAE unchanged; the adapter runs its model and guide on the labelled
    and the unlabelled rows of a batch under two name scopes, sites and plates (one run,
    one loss)."""
    module = clients["ss_vae_M2"]
    from examples_m2 import semi_supervised_labels

    train, test = data.load("digits", split="train"), data.load("digits", split="test")
    x = data.binarize(train, seed=0).x
    y = semi_supervised_labels(train.y, args.labelled)
    kwargs = {
        "input_size": 64,
        "z_dim": 16,
        "hidden_layers": [256],
        "config_enum": "parallel",
        "aux_loss_multiplier": 46.0,
    }

    def accuracy(ss):
        with torch.no_grad():
            return (ss.classifier(test.x).argmax(-1) == test.y).double().mean().item()

    pyro.set_rng_seed(0)
    ss = module.SSVAE(**kwargs)
    twin = copy.deepcopy(ss)
    enumerated_guide = config_enumerate(ss.guide, "parallel", expand=True)

    def model(x, y):
        labelled = y.sum(-1) > 0
        if labelled.any():
            with _part("sup"):
                ss.model(x[labelled], y[labelled])
                ss.model_classify(x[labelled], y[labelled])
        if not labelled.all():
            with _part("unsup"):
                ss.model(x[~labelled])

    def guide(x, y):
        labelled = y.sum(-1) > 0
        if labelled.any():
            with _part("sup"):
                ss.guide(x[labelled], y[labelled])
        if not labelled.all():
            with _part("unsup"):
                enumerated_guide(x[~labelled])

    pyro.clear_param_store()
    began = time.perf_counter()
    probae.fit((model, guide), x, c=y, epochs=args.m2_epochs, batch_size=100, lr=1e-3, seed=0)
    seconds = time.perf_counter() - began
    ours = accuracy(ss)

    # Pyro's recipe, from the same initialization: three losses stepped batch by batch
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    labelled = y.sum(-1) > 0
    sup = list(zip(x[labelled].split(100), y[labelled].split(100), strict=True))
    elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
    optim = pyro.optim.Adam({"lr": 1e-3, "betas": (0.9, 0.999)})
    guide_twin = config_enumerate(twin.guide, "parallel", expand=True)
    losses = [
        SVI(twin.model, guide_twin, optim, loss=elbo),
        SVI(twin.model_classify, twin.guide_classify, optim, loss=Trace_ELBO()),
    ]
    began = time.perf_counter()
    for _ in range(args.m2_epochs):
        order = torch.randperm(int((~labelled).sum()))
        unsup = [(b, None) for b in x[~labelled][order].split(100)]
        loaders = {"sup": sup, "unsup": unsup}
        module.run_inference_for_epoch(loaders, losses, max(1, len(unsup) // len(sup)))
    pyro_seconds = time.perf_counter() - began
    theirs = accuracy(twin)
    pyro.clear_param_store()
    return {
        "client": "examples/vae/ss_vae_M2.py",
        "numbers": {"probae_accuracy": ours, "pyro_accuracy": theirs},
        "adapter": "model/guide on labelled and unlabelled rows under two scopes (site and "
        "plate names)",
        "probae": f"test accuracy {ours:.3f} ({seconds:.0f} s)",
        "pyro": f"its three-SVI recipe, same budget: {theirs:.3f} ({pyro_seconds:.0f} s)",
    }


def row_m2_unadapted(clients, args):
    """ss_vae_M2.py's SSVAE pair as it is, on labelled ``(xs, ys)`` and unlabelled ``(xs,)``
    batches in turn (:func:`probae.batches.alternate`), its guide enumerated as its script
    enumerates it. One objective, the M2 ELBO, without the recipe's auxiliary classifier
    loss (a second SVI objective); its test ELBO is checked against Pyro's TraceEnum_ELBO
    on the same weights."""
    module = clients["ss_vae_M2"]
    from examples_m2 import semi_supervised_labels

    train, test = data.load("digits", split="train"), data.load("digits", split="test")
    x = data.binarize(train, seed=0).x
    y = semi_supervised_labels(train.y, args.labelled)
    labelled = y.sum(-1) > 0
    sup = list(zip(x[labelled].split(100), y[labelled].split(100), strict=True))
    unsup = list(x[~labelled].split(100))
    pyro.set_rng_seed(0)
    ss = module.SSVAE(input_size=64, z_dim=16, hidden_layers=[256], config_enum="parallel")
    pair = (ss.model, config_enumerate(ss.guide, "parallel", expand=True))
    pyro.clear_param_store()
    began = time.perf_counter()
    probae.fit(pair, batches.alternate(sup, unsup), epochs=args.m2_epochs, seed=0)
    seconds = time.perf_counter() - began
    with torch.no_grad():
        accuracy = (ss.classifier(test.x).argmax(-1) == test.y).double().mean().item()
    tx = data.binarize(test, seed=1).x
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=10, strict_enumeration_warning=False)
    with torch.no_grad():
        theirs = -elbo.loss(*pair, tx) / tx.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # y sampled from the guide: said
        ours = evaluate.elbo(pair, tx, num_particles=10).mean().item()
    pyro.clear_param_store()
    return {
        "client": "examples/vae/ss_vae_M2.py (pair only)",
        "numbers": {"accuracy": accuracy, "probae_elbo": ours, "pyro_elbo_same_weights": theirs},
        "adapter": "none (batches.alternate of its labelled and unlabelled batches)",
        "probae": f"ELBO {ours:.2f}, test accuracy {accuracy:.3f} without the auxiliary loss "
        f"({seconds:.0f} s)",
        "pyro": f"TraceEnum_ELBO(10), same weights {theirs:.2f}",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients",
        default=str(ROOT.parent / "shared" / "clients" / "pyro-examples" / "examples"),
        help="a folder holding Pyro's examples/vae and examples/cvae",
    )
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--train", type=int, default=10000, help="MNIST training images")
    parser.add_argument("--test", type=int, default=1000, help="MNIST test images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--m2-epochs", type=int, default=20, help="epochs of M2 on digits")
    parser.add_argument("--labelled", type=int, default=100, help="labelled digits for M2")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None, help="client names to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clients = import_clients(Path(args.clients))
    sys.path.insert(0, str(ROOT / "examples"))
    sys.modules.setdefault(
        "examples_m2", importlib.import_module("ss_vae_m2_digits")
    )  # the example's label split

    wanted = set(args.only or ["vae", "vae_comparison", "cvae", "ss_vae_M2"])
    rows = []
    if wanted & {"vae", "vae_comparison", "cvae"}:
        mnist = data.load("mnist", split="train", root=args.root)
        mnist_test = data.load("mnist", split="test", root=args.root)
        train = data.binarize(mnist.x[: args.train], seed=0)
        test = data.binarize(mnist_test.x[: args.test], seed=1)
        for name in ("vae", "vae_comparison"):
            if name in wanted:
                rows.append(row_vae(clients, name, train, test, args))
                print(rows[-1], flush=True)
        if "cvae" in wanted:
            rows.append(row_cvae(clients, mnist.x[: args.train], mnist_test.x[: args.test], args))
            print(rows[-1], flush=True)
    if "ss_vae_M2" in wanted:
        rows.append(row_m2(clients, args))
        print(rows[-1], flush=True)
        rows.append(row_m2_unadapted(clients, args))
        print(rows[-1], flush=True)
    print("\n| client | adapter | probae | Pyro |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['client']} | {row['adapter']} | {row['probae']} | {row['pyro']} |")
    return rows


if __name__ == "__main__":
    main()
