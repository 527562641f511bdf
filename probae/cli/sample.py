"""``probae sample``: a grid of pictures decoded from draws of a trained run's prior,
of a density fitted to its codes (a deterministic autoencoder's, or ``--sampler``),
or of p(z|c) class by class for a cvae.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import viz
from ..models import CVAE, DRAW, VQVAE, families, fit_code_prior
from ..models.autoencoders import fit_latent_density
from .options import _add_device, _add_threads
from .runs import (
    SAMPLES,
    CommandError,
    _device,
    _evaluation_data,
    _per,
    _positive,
    load_run,
)

SAMPLES_PER_CLASS = 8
#: mixture components fitted to a deterministic autoencoder's codes before sampling
CODE_COMPONENTS = 10


def add_parser(commands) -> None:
    """Adds ``sample`` and its options to the subcommands ``commands``."""
    sample = commands.add_parser(
        "sample",
        help="write a grid of samples from a trained run",
        description="Draw z from the prior of a trained model, decode E[x|z] and write the "
        "pictures as a grid. A cvae draws z from p(z|c) for every class c, one row per "
        "class. A deterministic autoencoder has no prior: a Gaussian mixture is first "
        "fitted to the codes of its training data (ex-post density estimation) and the "
        "samples decode draws from it.",
    )
    sample.add_argument("run_dir", help="run directory written by probae train")
    sample.add_argument(
        "-n",
        "--num",
        metavar="N",
        type=int,
        help=f"number of samples (default: {SAMPLES}); for cvae, samples per class "
        f"(default: {SAMPLES_PER_CLASS})",
    )
    sample.add_argument(
        "--components",
        metavar="K",
        type=int,
        help="components of the Gaussian mixture fitted to the codes of a deterministic "
        f"autoencoder (default: {CODE_COMPONENTS})",
    )
    sample.add_argument(
        "--sampler",
        metavar="SPEC",
        help="draw z from a density fitted to draws of q(z|x) of the training data instead "
        "of the prior: gmm:K (a K-component Gaussian mixture), flow (spline coupling "
        "layers) or two-stage (a second VAE on the codes)",
    )
    sample.add_argument(
        "--out", metavar="PNG", help="PNG file to write (default: RUN_DIR/samples.png)"
    )
    sample.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of the draws (default: 0)"
    )
    _add_device(sample)
    _add_threads(sample, 0)


def cmd_sample(args) -> int:
    device = _device(args.device)
    model, config = load_run(args.run_dir, device)
    family = families.family(config["model"])
    if args.components is not None and not family.deterministic:
        raise CommandError(
            f"--components does not apply to --model {config['model']}: it sizes the mixture "
            "fitted to the codes of a deterministic autoencoder"
        )
    default = SAMPLES_PER_CLASS if family.conditional else SAMPLES
    n = _positive("-n/--num", default if args.num is None else args.num)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.png"
    if out.is_dir() or out.suffix.lower() != ".png":
        raise CommandError(
            f"--out must name a .png file, got {str(out)!r}"
            + (" (a folder)" if out.is_dir() else "")
        )
    if getattr(args, "sampler", None) is not None:
        return _sample_with_sampler(model, config, args, n, out)
    if family.conditional:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(args.seed)
            print(viz.class_samples(model, n, path=out))
        return 0
    if family.deterministic:
        components = _positive(
            "--components", CODE_COMPONENTS if args.components is None else args.components
        )
        train = _evaluation_data(config, "train")
        fit_latent_density(model, train, components=components, seed=args.seed)
        print(
            f"{config['model']} has no prior to sample from: fitted a {components}-component "
            f"Gaussian mixture to the codes of its {len(train)} training {_per(config)}s; the "
            "samples decode draws from it"
        )
    elif isinstance(model, VQVAE):
        train = _evaluation_data(config, "train")
        fit_code_prior(model, train, seed=args.seed)
        print(
            f"fitted a gated PixelCNN prior to the code grids of its {len(train)} training "
            f"{_per(config)}s; the samples decode draws from it"
        )
    elif getattr(model.prior, "improper", False):
        raise CommandError("this model's prior is flat (improper): it cannot be sampled")
    print(viz.sample_grid(model, n, out, seed=args.seed))
    return 0


def _code_sampler(spec: str, seed: int):
    from .. import samplers

    name, _, value = spec.partition(":")
    if name == "gmm":
        try:
            components = int(value) if value else CODE_COMPONENTS
        except ValueError:
            components = 0
        if components < 1:
            raise CommandError(f"--sampler gmm:K needs a positive integer K, got {spec!r}")
        return samplers.GaussianMixture(components, seed=seed)
    if name == "flow" and not value:
        return samplers.Flow(seed=seed)
    if name == "two-stage" and not value:
        return samplers.TwoStage(seed=seed)
    raise CommandError(f"--sampler must be gmm:K, flow or two-stage, got {spec!r}")


def _sample_with_sampler(model, config, args, n, out) -> int:
    if isinstance(model, (CVAE, VQVAE, DRAW)):
        raise CommandError(
            f"--sampler does not apply to --model {config['model']}: it fits a density to "
            "vector codes of an unconditional model"
        )
    sampler = _code_sampler(args.sampler, args.seed)
    train = _evaluation_data(config, "train")
    try:
        sampler.fit(model, train, codes="posterior")
    except ValueError as error:
        raise CommandError(f"--sampler {args.sampler}: {error}") from None
    print(
        f"fitted {args.sampler} to draws of q(z|x) of its {len(train)} training "
        f"{_per(config)}s; the samples decode draws from it"
    )
    print(viz.sample_grid(model, n, out, seed=args.seed, sampler=sampler))
    return 0
