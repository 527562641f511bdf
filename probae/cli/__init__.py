"""The command line: ``probae train | evaluate | sample | demo``.

Each training run lives in a *run directory* that holds

- ``config.json``: everything needed to rebuild the model and find its data
  (data set, model family and that family's options, z_dim, likelihood,
  network, and the training options);
- ``checkpoint.pt``: written atomically by :func:`probae.fit` after every
  epoch, in the format of :mod:`probae.saving` (the model's class, options and
  weights, and the training state), so ``probae.load(run_dir)`` loads it;
- ``history.csv`` (rewritten after every epoch): the loss per epoch and its terms
  (rate, distortion, penalty), with the test split's loss, terms, KL per latent
  dimension and active units;
- PNG pictures: ``samples.png`` (a class-by-sample grid for the cvae; none for
  the deterministic autoencoders, which draw ``filters.png`` instead),
  ``reconstructions.png``, ``latent.png``, ``history.png``,
  ``rate_distortion.png``, ``kl_per_dimension.png``; and
  ``metrics.json`` once the run is evaluated;
- ``tensorboard/`` with ``--tensorboard``.

``probae train --model NAME`` builds any family in
:data:`probae.models.families.FAMILIES`: ``vae``,
``cvae`` (conditioned on the data set's labels), and the deterministic
autoencoders ``ae``, ``denoising-ae``, ``stacked-dae`` (trained greedily layer by
layer, ``--epochs-per-layer``, before its ``--epochs`` end to end), ``sparse-ae``,
``ksparse-ae`` and ``contractive-ae``. Their guides are point masses, so ``probae evaluate``
reports their per-point objective (the negative training loss) and no
log-likelihood, and ``probae sample`` first fits a Gaussian mixture to the
codes of their training data (:func:`probae.fit_latent_density`).

``probae train --resume`` continues an interrupted run from its checkpoint;
``probae evaluate`` and ``probae sample`` rebuild the model from the run
directory alone (:func:`probae.load`). ``probae demo`` trains a VAE on the
built-in ``digits`` set, draws its pictures and prints the test ELBO and the
importance-weighted log-likelihood estimate.

The package holds one module per command (``train``, ``evaluate``, ``sample``,
``demo``), the options they share (``options``: the model's are read from the family
table :data:`probae.models.families.OPTIONS`), and the run directory's
configuration (``runs``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .. import __version__, rundir
from .. import data as _data  # noqa: F401  (kept: callers reach the data module through it)
from ..models import families
from ..models.families import FAMILIES as FAMILIES
from . import demo, evaluate, runs, sample, train
from .demo import DEMO_MARK as DEMO_MARK
from .demo import _check_demo_folder as _check_demo_folder
from .runs import CONFIG_NAME as CONFIG_NAME
from .runs import HISTORY_NAME as HISTORY_NAME
from .runs import METRICS_NAME as METRICS_NAME
from .runs import CommandError, load_run
from .runs import _load_data as _load_data

__all__ = ["main", "build_parser", "load_run", "DEFAULTS"]

#: the options every model family has, with their defaults (stored in config.json)
DEFAULTS = runs.DEFAULTS


def build_parser() -> argparse.ArgumentParser:
    """The ``probae`` argument parser with its four commands."""
    parser = argparse.ArgumentParser(
        prog="probae",
        description="Train, evaluate and sample probabilistic-programming autoencoders "
        "(Pyro model/guide pairs).",
        epilog="Run 'probae COMMAND --help' for the options of a command. A first try: probae demo",
    )
    parser.add_argument("--version", action="version", version=f"probae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (train, evaluate, sample, demo):
        command.add_parser(commands)
    return parser


def _os_error(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        where = f"{error.filename!s}" + (f" -> {error.filename2!s}" if error.filename2 else "")
        return f"{error.strerror}: {where}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


_COMMANDS = {
    "train": train.cmd_train,
    "evaluate": evaluate.cmd_evaluate,
    "sample": sample.cmd_sample,
    "demo": demo.cmd_demo,
}


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 on success, 2 on bad input,
    1 when training fails, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    threads = getattr(args, "threads", 0)
    previous = torch.get_num_threads()
    try:
        if threads < 0:
            raise CommandError(f"--threads must be 0 or more, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        return _COMMANDS[args.command](args)
    except CommandError as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return error.status
    except families.OptionError as error:
        flag = "--" + error.option.replace("_", "-")
        print(f"probae {args.command}: error: {error.naming(flag)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FloatingPointError, rundir.RunDirectoryLocked) as error:
        print(f"probae {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # permissions, full disks, paths that are files
        print(f"probae {args.command}: error: {_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"probae {args.command}: error: interrupted", file=sys.stderr)
        return 130
    finally:
        # main() may run inside a larger program (a test, a notebook): leave it as found.
        torch.set_num_threads(previous)
