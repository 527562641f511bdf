r"""Training: :func:`fit` runs stochastic variational inference on any model/guide pair.

Each step draws a minibatch (sliced from tensors already on the model's device, or
streamed from a torch Dataset or DataLoader, :mod:`probae.batches`), evaluates a
Pyro ELBO's differentiable loss, and takes a PyTorch optimizer step:

- ``loss="elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized Monte Carlo ELBO;
- ``loss="meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, with the KL term in
  closed form where one exists;
- ``loss="iwae"``: the importance-weighted bound of Burda et al. (2016), Pyro's
  :class:`~pyro.infer.RenyiELBO` with :math:`\alpha = 0` and ``num_particles``
  vectorized particles (:class:`probae.objectives.IWAE`).

A model with discrete sites marked ``infer={"enumerate": "parallel"}`` (a
:class:`~probae.priors.GaussianMixture` with ``enumerate=True``) is trained with
:class:`~pyro.infer.TraceEnum_ELBO` for ``loss="elbo"``, and with those sites
summed out of every importance weight for ``loss="iwae"``.

This is Pyro's SVI with module-local parameters: the built-in models keep their
parameters in their own :class:`torch.nn.Module` (never in Pyro's global param
store, so two models in one process never share parameters), while any
``pyro.param``/``pyro.module`` parameter of a user's own pair is collected from a
parameter trace on every step, exactly as :class:`pyro.infer.SVI` does.
The optimizer is a PyTorch optimizer, so a distributed wrapper
(DistributedDataParallel) can wrap the same loop.

Around the steps the loop calls callbacks (:mod:`probae.callbacks`: the History,
checkpoints, the progress bar, early stopping, TensorBoard) and applies schedules
(:mod:`probae.terms`) are read off the traces the ELBO builds.

The package is split by what a reader comes to change: ``loop`` (:func:`fit` and its
short loop), ``setup`` (parameters, objective, optimizer, the plan), ``options`` (the
keywords checked), ``sources`` (the data), ``step`` (one optimizer step and its
options), ``epoch`` (one epoch and the validation summary), ``hooks`` (the callbacks a
run carries), ``state`` and ``resume`` (random streams, weights, checkpoints, the run
directory), ``precision`` (autocast) and ``history`` (:class:`History`).
"""

from ..saving import CHECKPOINT_NAME
from ..saving import read_checkpoint as load_checkpoint
from .epoch import _validation_loss as _validation_loss
from .history import History
from .hooks import _call as _call
from .loop import fit
from .setup import _Parameters as _Parameters
from .setup import default_optimizer

__all__ = ["History", "fit", "default_optimizer", "load_checkpoint", "CHECKPOINT_NAME"]
