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
    "OPTIONS",
    "SHARED_OPTIONS",
    "Family",
    "Option",
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


@dataclass(frozen=True)
class Option:
    """What a flat option of :data:`FAMILIES` means and how its value is written.

    Which families take the option, and their defaults, are read from
    :data:`FAMILIES` itself; this holds the rest.

    :ivar str help: its meaning, one sentence; ``{default}`` stands for its defaults
        as the families set them (``default: 8; 32 for ksparse-ae``).
    :ivar type type: the type of its value: ``int``, ``float``, ``str``, ``bool`` (on
        or off) or ``list`` (of positive widths, written ``256,256``).
    :ivar str metavar: the name of its value in a usage line (none for a ``bool`` or
        an option with ``choices``).
    :ivar tuple choices: the values it takes, where they are a closed set.
    :ivar bool empty: a ``list`` that may be empty (written ``none``).
    :ivar str section: ``"model"`` for the options of (nearly) every family,
        ``"family"`` for those of some families, ``"training"`` for those that shape
        the training rather than the model.
    """

    help: str
    type: type = str
    metavar: str | None = None
    choices: tuple | None = None
    empty: bool = False
    section: str = "family"


def _widths(help: str, **kwargs) -> Option:
    return Option(help, list, "W,W,...", **kwargs)


#: the flat options of the families by name, in the order ``probae train --help``
#: shows them; ``dataset_size`` has none, as the training data set it
OPTIONS = {
    "z_dim": Option("latent dimension ({default})", int, "N", section="model"),
    "likelihood": Option(
        f"likelihood p(x|z): {', '.join(sorted(getattr(likelihoods, '_REGISTRY', {})))} "
        "({default})",
        metavar="NAME",
        section="model",
    ),
    "scale": Option(
        "standard deviation (gaussian) or scale (laplace) of the likelihood, its starting "
        "value with --learn-scale (default: 1)",
        float,
        "S",
        section="model",
    ),
    "learn_scale": Option(
        "learn the gaussian or laplace likelihood's scale with the networks", bool, section="model"
    ),
    "hidden": _widths(
        "hidden widths of the mlp networks, comma-separated, or none for a single layer "
        "({default})",
        empty=True,
        section="model",
    ),
    "prior": Option(f"prior p(z): {', '.join(priors.names())} ({{default}})", metavar="NAME"),
    "posterior": Option(
        "posterior q(z|x): diagonal, full (covariance), or a flow of K maps: planar:K, iaf:K, "
        "spline:K ({default})",
        metavar="NAME[:K]",
    ),
    "components": Option(
        "mixture components of the gaussian-mixture prior (default: the prior's own, 10)",
        int,
        "K",
    ),
    "net": Option(
        "encoder/decoder networks: mlp on flattened points, or conv on (C, H, W) images "
        "({default})",
        choices=("mlp", "conv"),
    ),
    "beta": Option(
        "weight of the KL term; 1 is the VAE, other values the beta-VAE ({default})", float, "B"
    ),
    "corruption": Option(
        "the corruption C(x~|x) the encoder sees: masking zeroes values, gaussian adds noise, "
        "salt-and-pepper sets values to 0 or 1 ({default})",
        choices=tuple(CORRUPTIONS),
    ),
    "noise": Option(
        "level of --corruption: the fraction of values corrupted for masking and "
        "salt-and-pepper (default: 0.25), the standard deviation for gaussian (default: 0.1)",
        float,
        "LEVEL",
    ),
    "layers": _widths(
        "code widths of the stacked layers, bottom up; the last is the top code's size ({default})"
    ),
    "epochs_per_layer": Option(
        "epochs of greedy layer-wise training of each layer before the --epochs of the whole "
        "stack; 0 for none ({default})",
        int,
        "N",
    ),
    "penalty": Option(
        "sparsity penalty: l1 on the codes (a Laplace prior), or kl between a target mean "
        "activation --rho and each unit's mean activation over the batch ({default})",
        choices=SparseAE.PENALTIES,
    ),
    "weight": Option(
        "weight of the penalty: sparse-ae lambda of l1 (default: 0.1) or beta of kl (default: "
        "3); contractive-ae lambda of the squared Frobenius norm of the encoder's Jacobian "
        "(default: 0.1); rae of the decoder regularization (default: 0.001); wae (default: 10) "
        "and info-vae (default: 100) of the MMD",
        float,
        "W",
    ),
    "rho": Option(
        "target mean activation of the sparse-ae with --penalty kl, in (0, 1) (default: 0.05)",
        float,
        "R",
    ),
    "k": Option("code units kept, the K largest, at most --z-dim ({default})", int, "K"),
    "alpha": Option("weight of the index-code mutual information (default: 1)", float, "A"),
    "gamma": Option(
        "beta-tcvae: weight of the dimension-wise KL (default: 1); factor-vae: weight of the "
        "total-correlation penalty (default: 10)",
        float,
        "G",
    ),
    "discriminator_hidden": _widths(
        "hidden widths of the total-correlation discriminator (default: six layers of 1000)",
        empty=True,
    ),
    "kind": Option(
        "DIP-VAE-I (covariance of the posterior means) or -II (of the aggregate posterior) "
        "(default: ii)",
        choices=("i", "ii"),
    ),
    "lambda_od": Option("weight of the off-diagonal covariance terms (default: 10)", float, "L"),
    "lambda_d": Option(
        "weight of the diagonal covariance terms (default: 10 --lambda-od for kind i, "
        "--lambda-od for kind ii)",
        float,
        "L",
    ),
    "codebook_size": Option(
        "entries of the vq-vae's codebook; --z-dim is the size of each ({default})", int, "K"
    ),
    "commitment": Option("weight of the commitment term ({default})", float, "B"),
    "ema": Option(
        "update the codebook by moving averages (--no-ema: by the codebook term's gradient) "
        "({default})",
        bool,
    ),
    "dead_code_threshold": Option(
        "restart codebook entries whose running count per batch falls below N (0 never) "
        "({default})",
        float,
        "N",
    ),
    "steps": Option("drawing steps, one latent each ({default})", int, "T"),
    "read": Option("read window N x N of the attention ({default})", int, "N"),
    "write": Option("write patch N x N of the attention ({default})", int, "N"),
    "attention": Option(
        "Gaussian filterbank attention (--no-attention: read and write whole images) ({default})",
        bool,
    ),
    "encoder_size": Option("units of the encoder LSTM ({default})", int, "N"),
    "decoder_size": Option("units of the decoder LSTM ({default})", int, "N"),
    "regularization": Option(
        "decoder regularization: l2 on its weights, gp the squared norm of its Jacobian at the "
        "codes, spectral normalization of its layers, with --weight its weight ({default})",
        choices=RAE.REGULARIZATIONS,
    ),
    "code_weight": Option("weight beta of the code penalty beta/2 ||z||^2 ({default})", float, "B"),
    "kernel_scale": Option(
        "scale C of the inverse multiquadric kernel C / (C + ||a - b||^2) of the MMD "
        "(default: 2 --z-dim)",
        float,
        "C",
    ),
    "beta_warmup": Option(
        "epochs over which beta rises linearly from 0 to --beta (KL annealing); 0 for none "
        "({default})",
        int,
        "N",
        section="training",
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
