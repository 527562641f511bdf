"""The table of model families: names, constructors and default options.

The command line builds its models from this table, and a run directory's
``config.json`` (flat options such as ``{"model": "sparse-ae", "penalty": "kl"}``)
becomes a model through :func:`build`. A model built in Python needs none of it:
it records its own constructor options (:attr:`probae.VAE.config`), which
:func:`probae.save` writes and :func:`probae.load` reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import corruption as _corruption
from .. import likelihoods, nets, priors
from .autoencoders import (
    AE,
    ContractiveAE,
    DenoisingAE,
    DeterministicAutoencoder,
    KSparseAE,
    SparseAE,
)
from .cvae import CVAE
from .dipvae import DIPVAE
from .draw import DRAW
from .factorvae import FactorVAE
from .rae import RAE
from .stacked import StackedDenoisingAE
from .tcvae import BetaTCVAE
from .vae import VAE
from .vqvae import VQVAE
from .wae import WAE, InfoVAE

__all__ = [
    "CORRUPTIONS",
    "FAMILIES",
    "SHARED_OPTIONS",
    "Family",
    "OptionError",
    "build",
    "complete",
    "family",
]

#: options every family takes, with their defaults: the likelihood's scale (None:
#: the likelihood's own) and whether it is learned
SHARED_OPTIONS = {"scale": None, "learn_scale": False}

#: corruption processes of the denoising autoencoder by name: class and the name of
#: its noise-level argument
CORRUPTIONS = {
    "masking": (_corruption.MaskingNoise, "p"),
    "gaussian": (_corruption.GaussianNoise, "sigma"),
    "salt-and-pepper": (_corruption.SaltAndPepper, "p"),
}


class OptionError(ValueError):
    """A bad option, its message written around the option's name so that the
    command line can name its flag instead (``--learn-scale``)."""

    def __init__(self, option: str, template: str):
        self.option, self.template = option, template
        super().__init__(template.format(option))

    def naming(self, name: str) -> str:
        """The message with the option called ``name``."""
        return self.template.format(name)


def _accepted(cls, kwargs: dict, what: str) -> dict:
    parameters = inspect.signature(cls).parameters
    for key in kwargs:
        if key not in parameters:
            raise OptionError(key, f"{{}} does not apply to the {what} {cls.__name__}")
    return kwargs


def _prior(config: dict):
    prior = priors.get(config["prior"], config["z_dim"])
    if config["components"] is None:
        return prior
    kwargs = _accepted(type(prior), {"components": config["components"]}, "prior")
    return priors.get(config["prior"], config["z_dim"], **kwargs)


def _likelihood(config: dict):
    likelihood = likelihoods.get(config["likelihood"])
    kwargs = {}
    if config["scale"] is not None:
        kwargs["scale"] = config["scale"]
    if config["learn_scale"]:
        kwargs["learn_scale"] = True
    if not kwargs:
        return likelihood
    return likelihoods.get(
        config["likelihood"], **_accepted(type(likelihood), kwargs, "likelihood")
    )


# Each family's builder turns the options into its constructor's arguments. ``common``
# holds those every family takes (x_shape, z_dim, likelihood, and hidden where the
# family has it). Where the
# constructor chooses a default from another argument (the noise level of a
# corruption, the weight of a sparsity penalty), the builder writes the value used
# back into ``config``, so that a stored configuration records it.


def _vae(config: dict, common: dict):
    if str(config["prior"]).lower() == "vampprior":  # a mixture of the model's own posteriors
        if config["components"] is not None:
            raise OptionError("components", "{} does not apply to the prior VampPrior")
        encoder = nets.make_encoder(common["x_shape"], common["z_dim"], common["hidden"])
        prior = priors.get("vampprior", common["z_dim"], encoder=encoder)
        return VAE(
            **common,
            encoder=encoder,
            prior=prior,
            beta=config["beta"],
            posterior=config["posterior"],
        )
    return VAE(**common, prior=_prior(config), beta=config["beta"], posterior=config["posterior"])


def _cvae(config: dict, common: dict):
    if config.get("c_shape") is None:
        raise ValueError("a cvae configuration needs c_shape, the number of classes as [K]")
    return CVAE(
        **common,
        c_shape=tuple(config["c_shape"]),
        beta=config["beta"],
        posterior=config["posterior"],
    )


def _beta_tcvae(config: dict, common: dict):
    size = config["dataset_size"]
    return BetaTCVAE(
        **common,
        beta=config["beta"],
        dataset_size=None if size is None else int(size),
        alpha=config["alpha"],
        gamma=config["gamma"],
    )


def _factor_vae(config: dict, common: dict):
    return FactorVAE(
        **common,
        gamma=config["gamma"],
        discriminator_hidden=tuple(config["discriminator_hidden"]),
        beta=config["beta"],
    )


def _dip_vae(config: dict, common: dict):
    model = DIPVAE(
        **common,
        kind=config["kind"],
        lambda_od=config["lambda_od"],
        lambda_d=config["lambda_d"],
        beta=config["beta"],
    )
    config["lambda_d"] = model.lambda_d
    return model


def _ae(config: dict, common: dict):
    return AE(**common)


def _denoising_ae(config: dict, common: dict):
    return DenoisingAE(**common, corruption=_corruption_of(config))


def _stacked_dae(config: dict, common: dict):
    return StackedDenoisingAE(
        common["x_shape"],
        layers=tuple(config["layers"]),
        corruption=_corruption_of(config),
        likelihood=common["likelihood"],
    )


def _corruption_of(config: dict):
    if config["corruption"] not in CORRUPTIONS:
        raise ValueError(
            f"corruption must be one of {list(CORRUPTIONS)}, got {config['corruption']!r}"
        )
    cls, level = CORRUPTIONS[config["corruption"]]
    if config["noise"] is None:
        config["noise"] = inspect.signature(cls).parameters[level].default
    try:
        corruption = cls(**{level: config["noise"]})
    except (ValueError, TypeError) as error:
        raise OptionError(
            "noise", f"{{}} {config['noise']} for corruption {config['corruption']}: {error}"
        ) from None
    return corruption


def _sparse_ae(config: dict, common: dict):
    if config["penalty"] == "l1" and config["rho"] is not None:
        raise OptionError("rho", "{} is the target activation of penalty kl; penalty l1 has none")
    rho = {} if config["rho"] is None else {"rho": config["rho"]}
    model = SparseAE(**common, penalty=config["penalty"], weight=config["weight"], **rho)
    config["weight"] = model.weight
    if model.penalty == "kl":
        config["rho"] = model.rho
    return model


def _ksparse_ae(config: dict, common: dict):
    return KSparseAE(**common, k=config["k"])


def _contractive_ae(config: dict, common: dict):
    return ContractiveAE(**common, weight=config["weight"])


def _vq_vae(config: dict, common: dict):
    return VQVAE(
        common["x_shape"],
        code_dim=common["z_dim"],
        codebook_size=config["codebook_size"],
        commitment=config["commitment"],
        ema=config["ema"],
        dead_code_threshold=config["dead_code_threshold"],
        likelihood=common["likelihood"],
    )


def _draw(config: dict, common: dict):
    return DRAW(
        common["x_shape"],
        common["z_dim"],
        steps=config["steps"],
        read=(config["read"], config["read"]),
        write=(config["write"], config["write"]),
        attention=config["attention"],
        encoder_size=config["encoder_size"],
        decoder_size=config["decoder_size"],
        likelihood=common["likelihood"],
        beta=config["beta"],
    )


def _rae(config: dict, common: dict):
    return RAE(
        **common,
        regularization=config["regularization"],
        code_weight=config["code_weight"],
        decoder_weight=config["weight"],
    )


def _wae(config: dict, common: dict):
    return WAE(
        **common,
        prior=_prior(config),
        weight=config["weight"],
        kernel_scale=config["kernel_scale"],
    )


def _info_vae(config: dict, common: dict):
    return InfoVAE(
        **common,
        prior=_prior(config),
        beta=config["beta"],
        weight=config["weight"],
        kernel_scale=config["kernel_scale"],
    )


@dataclass(frozen=True)
class Family:
    """A model family built from flat options.

    :ivar type cls: its class.
    :ivar dict options: the options it takes beyond :data:`SHARED_OPTIONS`, with their
        defaults (its constructor's; None where the constructor derives one from
        another option).
    :ivar build: ``build(config, common) -> model``.
    """

    cls: type
    options: dict
    build: Callable

    @property
    def conditional(self) -> bool:
        """Conditioned on the data set's labels."""
        return issubclass(self.cls, CVAE)

    @property
    def deterministic(self) -> bool:
        """A point-mass guide: no density, no prior to sample from."""
        return issubclass(self.cls, DeterministicAutoencoder)


_VARIATIONAL = {"z_dim": 8, "likelihood": "bernoulli", "hidden": [256, 256], "beta": 1.0}
_DETERMINISTIC = {"z_dim": 8, "likelihood": "gaussian", "hidden": [128]}

#: the model families by name (``probae train --model NAME``)
FAMILIES = {
    "vae": Family(
        VAE,
        {
            **_VARIATIONAL,
            "prior": "standard-normal",
            "posterior": "diagonal",
            "components": None,
            "net": "mlp",
            "beta_warmup": 0,
        },
        _vae,
    ),
    "cvae": Family(CVAE, {**_VARIATIONAL, "posterior": "diagonal", "beta_warmup": 0}, _cvae),
    "beta-tcvae": Family(
        BetaTCVAE,
        {**_VARIATIONAL, "beta": 6.0, "alpha": 1.0, "gamma": 1.0, "dataset_size": None},
        _beta_tcvae,
    ),
    "factor-vae": Family(
        FactorVAE,
        {**_VARIATIONAL, "gamma": 10.0, "discriminator_hidden": [1000] * 6},
        _factor_vae,
    ),
    "dip-vae": Family(
        DIPVAE,
        {**_VARIATIONAL, "kind": "ii", "lambda_od": 10.0, "lambda_d": None},
        _dip_vae,
    ),
    "ae": Family(AE, _DETERMINISTIC, _ae),
    "denoising-ae": Family(
        DenoisingAE, {**_DETERMINISTIC, "corruption": "masking", "noise": None}, _denoising_ae
    ),
    # layers: the code widths bottom up (the last is the top code's size, so no z_dim);
    # epochs_per_layer: the greedy phase before the end-to-end --epochs (0: none)
    "stacked-dae": Family(
        StackedDenoisingAE,
        {
            "likelihood": "gaussian",
            "layers": [500, 250, 50],
            "corruption": "masking",
            "noise": None,
            "epochs_per_layer": 10,
        },
        _stacked_dae,
    ),
    "sparse-ae": Family(
        SparseAE, {**_DETERMINISTIC, "penalty": "l1", "weight": None, "rho": None}, _sparse_ae
    ),
    "ksparse-ae": Family(
        KSparseAE, {**_DETERMINISTIC, "z_dim": 32, "hidden": [], "k": 10}, _ksparse_ae
    ),
    "contractive-ae": Family(
        ContractiveAE, {**_DETERMINISTIC, "hidden": [], "weight": 0.1}, _contractive_ae
    ),
    # z_dim is the size of a codebook entry (vq-vae) or of each step's latent (draw)
    "vq-vae": Family(
        VQVAE,
        {
            "z_dim": 64,
            "likelihood": "bernoulli",
            "codebook_size": 512,
            "commitment": 0.25,
            "ema": True,
            # restarts: without them 512 entries collapse onto one on the digits
            "dead_code_threshold": 1.0,
        },
        _vq_vae,
    ),
    "draw": Family(
        DRAW,
        {
            "z_dim": 10,
            "likelihood": "bernoulli",
            "beta": 1.0,
            "steps": 16,
            "read": 2,
            "write": 5,
            "attention": True,
            "encoder_size": 256,
            "decoder_size": 256,
        },
        _draw,
    ),
    # weight: the decoder regularization (rae) or the MMD term's (wae, info-vae)
    "rae": Family(
        RAE,
        {**_DETERMINISTIC, "regularization": "l2", "code_weight": 1.0, "weight": 1e-3},
        _rae,
    ),
    "wae": Family(
        WAE,
        {
            **_DETERMINISTIC,
            "hidden": [256, 256],
            "prior": "standard-normal",
            "components": None,
            "weight": 10.0,
            "kernel_scale": None,
        },
        _wae,
    ),
    "info-vae": Family(
        InfoVAE,
        {
            **_VARIATIONAL,
            "prior": "standard-normal",
            "components": None,
            "weight": 100.0,
            "kernel_scale": None,
        },
        _info_vae,
    ),
}


def family(name: str) -> Family:
    """The family called ``name``; a ValueError listing the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; expected one of {list(FAMILIES)}")
    return FAMILIES[name]


def complete(config: dict, default_model: str = "vae") -> dict:
    """The configuration with the defaults of the options it lacks (its family's and
    the shared ones)."""
    return {**SHARED_OPTIONS, **family(config.get("model", default_model)).options, **config}


def build(config: dict, x_shape=None) -> torch.nn.Module:
    """Builds the (untrained) model that flat options describe, recording in
    ``config`` the defaults its constructor resolved.

    :param dict config: ``{"model": NAME, ...}``; missing options take the family's
        defaults (a ``cvae`` needs ``c_shape``).
    :param tuple x_shape: shape of one data point (default: ``config["x_shape"]``).
    """
    config.update(complete(config))
    x_shape = config.get("x_shape") if x_shape is None else x_shape
    if x_shape is None:
        raise ValueError("the configuration has no x_shape, the shape of one data point")
    common = {
        "x_shape": tuple(x_shape),
        "z_dim": config.get("z_dim"),  # the stacked-dae's is the top of its layers
        "likelihood": _likelihood(config),
    }
    if "hidden" in config:  # the recurrent and convolutional families have none
        common["hidden"] = tuple(config["hidden"])
    return family(config["model"]).build(config, common)
