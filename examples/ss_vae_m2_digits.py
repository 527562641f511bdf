r"""The semi-supervised M2 model (Kingma et al., 2014) on the 8x8 digits, labelled and
unlabelled images in one probae.fit run.

The model is :math:`p(y)\,p(z)\,p(x|y, z)` with a uniform class prior; the guide is
:math:`q(y|x)\,q(z|x, y)`. A labelled point contributes its ELBO with y observed; an
unlabelled one the ELBO with y summed out exactly (the guide's site ``"y_u"`` is marked
for enumeration, so :func:`probae.fit` trains with :class:`~pyro.infer.TraceEnum_ELBO`):

.. math:: \mathcal L_u(x) = \sum_y q(y|x)\big[\mathcal L(x, y) - \log q(y|x)\big].

The classifier :math:`q(y|x)` also gets the auxiliary term
:math:`\alpha \log q(y|x)` on labelled points (Kingma et al.'s eq. 9). Each batch mixes
labelled and unlabelled points, so the objective of a batch is the sum of the three
losses Pyro's ``examples/vae/ss_vae_M2.py`` steps one after another.

    python examples/ss_vae_m2_digits.py --labelled 100 --epochs 60

**References**

[1] `Semi-Supervised Learning with Deep Generative Models`, Diederik P. Kingma,
Danilo J. Rezende, Shakir Mohamed, Max Welling (NeurIPS 2014)
"""

import argparse
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

import probae
from probae import data


def _cat(*tensors):
    """Concatenates on the last dim after broadcasting the others (enumerated y)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], -1)


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers[:-1])


class M2(nn.Module):
    """M2 as a probae pair: ``model(x, y)`` and ``guide(x, y)``, where ``y`` holds one-hot
    rows for labelled points and rows of zeros for unlabelled ones.

    :param int x_dim: pixels per image.
    :param int num_classes: classes of y.
    :param int z_dim: dimension of the style z.
    :param int hidden: width of the hidden layer of every network.
    :param float aux_loss_multiplier: alpha of the classifier's auxiliary loss.
    """

    def __init__(self, x_dim=64, num_classes=10, z_dim=16, hidden=256, aux_loss_multiplier=46.0):
        super().__init__()
        self.num_classes, self.z_dim, self.alpha = num_classes, z_dim, aux_loss_multiplier
        self.encoder_y = _mlp([x_dim, hidden, num_classes])
        self.encoder_z = _mlp([x_dim + num_classes, hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim + num_classes, hidden, x_dim])

    def _q_z(self, x, y):
        loc, raw = self.encoder_z(_cat(x, y)).chunk(2, -1)
        return dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1)

    def _generate(self, x, y, suffix):
        z = pyro.sample("z" + suffix, dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
        uniform = x.new_full((self.num_classes,), 1.0 / self.num_classes)
        y = pyro.sample("y" + suffix, dist.OneHotCategorical(uniform), obs=y)
        logits = self.decoder(_cat(z, y))
        pyro.sample("x" + suffix, dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def model(self, x, y):
        labelled = y.sum(-1) > 0
        if labelled.any():
            xl, yl = x[labelled], y[labelled]
            with pyro.plate("labelled", xl.shape[0]):
                self._generate(xl, yl, "_l")
                if self.alpha:
                    with poutine.scale(scale=self.alpha):
                        q_y = dist.OneHotCategorical(logits=self.encoder_y(xl))
                        pyro.sample("y_aux", q_y, obs=yl)
        if not labelled.all():
            xu = x[~labelled]
            with pyro.plate("unlabelled", xu.shape[0]):
                self._generate(xu, None, "_u")

    def guide(self, x, y):
        labelled = y.sum(-1) > 0
        if labelled.any():
            xl, yl = x[labelled], y[labelled]
            with pyro.plate("labelled", xl.shape[0]):
                pyro.sample("z_l", self._q_z(xl, yl))
        if not labelled.all():
            xu = x[~labelled]
            with pyro.plate("unlabelled", xu.shape[0]):
                q_y = dist.OneHotCategorical(logits=self.encoder_y(xu))
                yu = pyro.sample("y_u", q_y, infer={"enumerate": "parallel"})
                pyro.sample("z_u", self._q_z(xu, yu))

    @torch.no_grad()
    def classify(self, x):
        """The most probable class under q(y|x)."""
        return self.encoder_y(x).argmax(-1)


def semi_supervised_labels(labels, num_labelled, num_classes=10, seed=0):
    """One-hot rows for ``num_labelled`` points (as many of each class as can be), zero
    rows for the rest."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.shape[0], generator=gen)
    chosen = []
    for k in range(num_classes):
        of_k = order[labels[order] == k]
        chosen.append(of_k[: num_labelled // num_classes])
    chosen = torch.cat(chosen)
    y = torch.zeros(labels.shape[0], num_classes)
    y[chosen] = nn.functional.one_hot(labels[chosen].long(), num_classes).float()
    return y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default: 60)")
    parser.add_argument("--labelled", type=int, default=100, help="labelled training images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", default=None, help="folder for history.json (optional)")
    args = parser.parse_args(argv)

    train, test = data.load("digits", split="train"), data.load("digits", split="test")
    x = data.binarize(train, seed=0).x.to(args.device)
    y = semi_supervised_labels(train.y, args.labelled).to(args.device)
    m2 = M2(x_dim=x.shape[1]).to(args.device)
    history = probae.fit(m2, x, c=y, epochs=args.epochs, batch_size=100, lr=1e-3, seed=0)
    accuracy = (m2.classify(test.x.to(args.device)).cpu() == test.y).double().mean().item()
    print(f"final training loss {history.train_loss[-1]:.3f} nats per image")
    print(f"test accuracy {accuracy:.3f} with {int(y.sum())} labelled training images")
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        history.to_json(Path(args.out) / "history.json")
    return accuracy


if __name__ == "__main__":
    main()
