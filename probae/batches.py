"""Batches of data for training and evaluation, from memory or streamed.

:func:`source` turns what a user holds into something that yields batches:

- a tensor, a :class:`probae.data.Dataset` or a
  :class:`~torch.utils.data.TensorDataset`: :class:`InMemory`, the whole data set
  on the model's device, batches sliced by index (no collation, no copies);
- any other map-style :class:`torch.utils.data.Dataset` (items ``x`` or
  ``(x, y, ...)``): :class:`Streamed`, read by a
  :class:`~torch.utils.data.DataLoader` with workers, pinned memory and
  non-blocking copies to CUDA. With ``in_memory=None`` a data set that fits in
  ``memory_budget`` bytes is read once and then kept in memory;
- a :class:`~torch.utils.data.DataLoader`: streamed as it is (its own sampler
  and batch size); for a user's own pair, its items are the program's arguments
  (see below).
- any other iterable of batches (a list, a user's own loader), or a DataLoader
  given with a user's own pair: :class:`Program`. Each item holds the arguments
  of one call, passed to model and guide exactly as ``SVI.step(*args, **kwargs)``
  passes them: a tuple (positional arguments; trailing elements that the model
  takes no parameter for, such as the labels of an ``(x, y)`` loader for a
  ``model(x)``, are left out, as ``for x, _ in loader: svi.step(x)`` leaves them),
  a dict (keyword arguments), or a single tensor. A DataLoader built without ``generator=`` draws its workers'
  seed from PyTorch's global generator each epoch, which shifts the model's
  random draws: give it a generator for runs that must repeat exactly. Under
  ``torchrun`` a DataLoader is read as it is: give it a
  :class:`~torch.utils.data.DistributedSampler` so that ranks read different points.

A streamed epoch visits the points in the same order as an in-memory epoch (one
permutation drawn from PyTorch's global generator at the start of the epoch, or
under ``torchrun`` rank 0's permutation, of which each rank reads only its own
shard), so both paths train the same parameters for the same seed.
"""

from __future__ import annotations

import inspect
import itertools

import torch

from . import _validate
from . import data as _data
from ._common import device_of, prepare
from ._reading import _Indexed, _read_all, read_all
from .importance import Arguments

__all__ = [
    "Arguments",
    "InMemory",
    "Program",
    "Streamed",
    "alternate",
    "is_program_data",
    "is_streamable",
    "materialize",
    "source",
    "streamed",
]

#: a map-style data set up to this many bytes (as float32) is read into memory once
MEMORY_BUDGET = 1 << 30


class InMemory:
    """Tensors on the model's device; batches are index slices.

    :ivar torch.Tensor x: the data, ``(N, *x_shape)``.
    :ivar c: the conditions (one row per point) or None.
    """

    streamed = False

    def __init__(self, x: torch.Tensor, c=None):
        self.x, self.c = x, c

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def device(self):
        return self.x.device

    def head(self, n: int):
        return self.x[:n], None if self.c is None else self.c[:n]

    def batches(self, order, steps=None):
        """``(x, c)`` for each index tensor of ``order()`` (the epoch's index batches)."""
        for rows in order():
            yield self.x[rows], None if self.c is None else self.c[rows]

    def in_order(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            rows = slice(start, start + batch_size)
            yield self.x[rows], None if self.c is None else self.c[rows]


class _EpochOrder(torch.utils.data.Sampler):
    """Index batches of one epoch, drawn when the epoch's first batch is asked for (in
    the main process, from the global generator, before the epoch's first step), so a
    streamed epoch has the in-memory epoch's order."""

    def __init__(self, order, length: int):
        self.order = order  # callable -> iterable of index tensors
        self.length = length  # known up front: drawing an order to count it would use the RNG

    def __iter__(self):
        # lazily: a DataLoader may create an iterator it never advances
        for rows in self.order():
            yield rows.tolist()

    def __len__(self):
        return self.length


class Streamed:
    """A map-style data set read batch by batch through a DataLoader.

    :param dataset: a map-style :class:`torch.utils.data.Dataset` (items ``x`` or
        ``(x, y, ...)``) or a :class:`~torch.utils.data.DataLoader`.
    :param module: the model (its device, ``x_shape``, ``check_x``, likelihood).
    :param c: a condition tensor (one row per point), ``"label"`` (one-hot rows of
        the items' second element, ``num_classes`` classes) or None.
    :param int num_workers: DataLoader worker processes.
    :param bool check: check every batch's values (finite, in the likelihood's
        support) as it arrives; False trusts the data.
    """

    streamed = True

    def __init__(
        self,
        dataset,
        module=None,
        c=None,
        num_classes=None,
        num_workers: int = 0,
        check: bool = True,
        name: str = "data",
    ):
        self.loader = dataset if isinstance(dataset, torch.utils.data.DataLoader) else None
        self.dataset = dataset if self.loader is None else dataset.dataset
        self.module, self.c, self.num_classes = module, c, num_classes
        self.num_workers, self.check, self.name = num_workers, check, name
        self.device = device_of(module, torch.device("cpu"))
        self.x_shape = getattr(module, "x_shape", None)
        if isinstance(c, torch.Tensor):
            if self.loader is not None:
                raise ValueError(
                    f"c= as a tensor cannot follow the points of a DataLoader; give {name} as "
                    "a Dataset or use condition='label'"
                )
            if c.shape[0] != len(self.dataset):
                raise ValueError(
                    f"c must have one row per data point: {name} has {len(self.dataset)}, "
                    f"c has {c.shape[0]}"
                )
            self.c = c.to(self.device)
        self._loaders = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, key, order, length):
        if self.loader is not None:
            return self.loader
        if key not in self._loaders:
            self._loaders[key] = torch.utils.data.DataLoader(
                _Indexed(self.dataset, with_label=self.c == "label"),
                batch_sampler=_EpochOrder(order, length),
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.num_workers > 0,
                # a generator of its own, so that starting an epoch draws nothing from
                # the global one (the worker seeds come from it)
                generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63),
            )
        return self._loaders[key]

    def _to_batch(self, item):
        if self.loader is not None:  # the user's collation: x or (x, y, ...)
            index = None
            parts = list(item) if isinstance(item, (tuple, list)) else [item]
        else:
            index, *parts = item
        x = parts[0].to(self.device, non_blocking=True)
        if not torch.is_floating_point(x):
            raise TypeError(f"{self.name} must hold floating-point values, got dtype {x.dtype}")
        if self.x_shape is not None and tuple(x.shape[1:]) != tuple(self.x_shape):
            if x[0].numel() == torch.Size(self.x_shape).numel():
                x = x.reshape(x.shape[0], *self.x_shape)  # images (C, H, W) for a flat model
        c = None
        if isinstance(self.c, torch.Tensor):
            c = self.c[index.to(self.device)]
        elif self.c == "label":
            if len(parts) < 2:
                raise ValueError(f"condition='label' needs {self.name} items (x, y)")
            c = _data.one_hot(parts[1], self.num_classes).to(self.device, non_blocking=True)
        if self.check:
            self._check(x)
        return x, c

    def _check(self, x):
        if self.module is not None and hasattr(self.module, "check_x"):
            self.module.check_x(x, self.name)
        if not _validate.all_finite(x):
            raise ValueError(f"{self.name} contains NaN or infinite values")
        likelihood = getattr(self.module, "likelihood", None)
        if likelihood is not None and hasattr(likelihood, "validate"):
            likelihood.validate(x)

    def head(self, n: int):
        """The first ``n`` points, read in this process."""
        if self.loader is not None:
            x, c = next(iter(self.batches(None, None)))
            return x[:n], None if c is None else c[:n]
        items = [_Indexed(self.dataset, self.c == "label")[i] for i in range(min(n, len(self)))]
        return self._to_batch(torch.utils.data.default_collate(items))

    def batches(self, order, steps: int):
        """``(x, c)`` batches of one epoch; ``order`` is a callable returning the epoch's
        ``steps`` index batches (ignored for a DataLoader, which has its own sampler)."""
        for item in self._loader("train", order, steps):
            yield self._to_batch(item)

    def in_order(self, batch_size: int):
        n = len(self)
        steps = -(-n // batch_size)
        order = lambda: torch.arange(n).split(batch_size)  # noqa: E731
        for item in self._loader(("in_order", batch_size), order, steps):
            yield self._to_batch(item)


def is_streamable(data) -> bool:
    """A torch Dataset (other than probae's own) or a DataLoader."""
    return isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)) and not (
        isinstance(data, _data.Dataset)
    )


def _fits(dataset, budget) -> bool:
    first = dataset[0]
    x = first[0] if isinstance(first, (tuple, list)) else first
    return len(dataset) * torch.as_tensor(x).numel() * 4 <= budget


def materialize(
    data, in_memory=None, num_workers: int = 0, memory_budget: int | None = None, x_shape=None
):
    """``data`` as a :class:`probae.data.Dataset` where it is (or should be) held in
    memory, otherwise ``data`` itself (a torch Dataset or DataLoader to stream).

    :param bool in_memory: True reads a torch Dataset into memory once, False streams
        it, None (default) keeps it in memory when it fits in ``memory_budget`` bytes
        (as float32). Random transforms of a data set are drawn once when it is read
        into memory: pass False to draw them afresh every epoch.
    :param tuple x_shape: the model's point shape; points read into memory are
        reshaped to it where only the layout differs.
    """
    if in_memory not in (None, True, False):
        raise TypeError(f"in_memory must be True, False or None, got {in_memory!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if isinstance(data, torch.utils.data.TensorDataset) and in_memory is not False:
        return read_all(data, x_shape)
    if is_streamable(data) and not isinstance(data, torch.utils.data.DataLoader):
        budget = MEMORY_BUDGET if memory_budget is None else memory_budget
        if in_memory or (in_memory is None and _fits(data, budget)):
            return _read_all(data, num_workers, x_shape)
    return data


def streamed(data, module, c, condition, name, num_workers=0, check=True):
    """A :class:`Streamed` source for a torch Dataset or DataLoader, the condition
    given as a tensor (``c=`` or ``condition=``) or as ``condition="label"``."""
    if isinstance(condition, torch.Tensor):
        if c is not None:
            raise ValueError("give the condition either as c= or as condition=, not both")
        c = condition
    elif condition not in (None, "label"):
        raise ValueError(f"condition={condition!r} on streamed {name}: use 'label' or a tensor")
    num_classes = None
    if condition == "label":
        c_shape = getattr(module, "c_shape", None)
        if c_shape is None or len(tuple(c_shape)) != 1:
            raise ValueError("condition='label' on streamed data needs a model with c_shape=(K,)")
        c, num_classes = "label", tuple(c_shape)[0]
    return Streamed(data, module, c, num_classes, num_workers, check, name)


def source(
    data,
    module=None,
    c=None,
    condition=None,
    name: str = "data",
    check_support: bool = True,
    num_workers: int = 0,
    in_memory: bool | None = None,
    check: bool = True,
):
    """What ``data`` is, as a source of batches on the module's device.

    :param data: a tensor, a :class:`probae.data.Dataset`, a map-style
        :class:`torch.utils.data.Dataset` or a :class:`~torch.utils.data.DataLoader`.
    :param c: conditions: a tensor with one row per point, or None.
    :param condition: see :func:`probae.data.resolve_condition`; on streamed data
        ``"label"`` (items ``(x, y)``) or a tensor.
    :param bool in_memory: see :func:`materialize`.
    :param bool check: check streamed batches as they arrive (False trusts the data
        to be finite and in the likelihood's support, saving the checks).
    :returns: an :class:`InMemory` or a :class:`Streamed`.
    """
    data = materialize(data, in_memory, num_workers, x_shape=getattr(module, "x_shape", None))
    if is_streamable(data):
        return streamed(data, module, c, condition, name, num_workers, check and check_support)
    c = _data.resolve_condition(data, condition, c, getattr(module, "c_shape", None), name)
    x, c = prepare(data, module, c, name=name, check_support=check_support)
    return InMemory(x, c)


# -- a program's own batches ---------------------------------------------------------


def _positional_count(fn) -> float:
    """How many positional arguments ``fn`` takes (infinity with ``*args``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return float("inf")
    count = 0
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return float("inf")
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _moved(value, device):
    if device is None:
        return value
    if isinstance(value, torch.Tensor) or type(value).__name__ == "PackedSequence":
        return value.to(device, non_blocking=True)
    return value


class Program:
    """Batches that are a program's own arguments: each item of ``data`` is one call's
    arguments for model and guide (see the module for tuples, dicts and tensors).

    Tensors (and packed sequences) among the arguments are moved to the model's
    device; everything else is passed as it is.

    :param data: a re-iterable of batches: a list, a DataLoader, any object whose
        ``iter()`` starts afresh. A one-shot iterator (a generator) is read once, which
        serves an evaluation but not several epochs of training.
    :param model: the model, whose signature says how many positional arguments it takes.
    :param device: the device of the model's parameters, or None to leave tensors where they are.
    """

    streamed = True
    program = True
    loader = None

    def __init__(self, data, model, device=None, name: str = "data"):
        self.data, self.name = data, name
        self.device = device if device is not None else torch.device("cpu")
        self._to = device
        self.positional = _positional_count(model)
        self.one_shot = iter(data) is data
        self._first = None

    def __len__(self) -> int:
        try:
            return len(self.data)
        except TypeError:
            return 0  # not known ahead

    def arguments(self, item) -> Arguments:
        """One item of the data as an :class:`Arguments`."""
        if isinstance(item, Arguments):
            args, kwargs = tuple(item), item.kwargs
        elif isinstance(item, dict):
            args, kwargs = (), item
        elif isinstance(item, (tuple, list)):
            args, kwargs = tuple(item), {}
            if len(args) > self.positional:
                args = args[: int(self.positional)]
        else:
            args, kwargs = (item,), {}
        return Arguments(
            tuple(_moved(a, self._to) for a in args),
            {k: _moved(v, self._to) for k, v in kwargs.items()},
        )

    def _items(self):
        if self.one_shot:
            if self._first is not None:
                first, self._first = self._first, None
                return itertools.chain([first], self.data)
            return self.data
        return iter(self.data)

    def head(self, n=None) -> Arguments:
        """The first batch's arguments (read once and kept for a one-shot iterator)."""
        if self.one_shot:
            if self._first is None:
                try:
                    self._first = next(self.data)
                except StopIteration:
                    raise ValueError(f"{self.name} holds no batch") from None
            return self.arguments(self._first)
        for item in self.data:
            return self.arguments(item)
        raise ValueError(f"{self.name} holds no batch")

    def probes(self) -> list:
        """First batches of every kind the data holds, besides :meth:`head` (the first
        unlabelled batch of :func:`alternate`)."""
        if isinstance(self.data, _Alternating):
            return [self.arguments(item) for item in self.data.firsts()[1:]]
        return []

    def batches(self, order=None, steps=None):
        """Every batch's :class:`Arguments`, in the data's own order."""
        for item in self._items():
            yield self.arguments(item)

    def in_order(self, batch_size=None):
        return self.batches()


def is_program_data(data, module=None) -> bool:
    """Whether ``data`` is an iterable of a program's own batches (see :class:`Program`):
    any iterable that is not a tensor, an array or a data set, and a DataLoader given
    with a user's own pair (a model that is not one of probae's families)."""
    if isinstance(data, torch.utils.data.DataLoader):
        return getattr(module, "x_shape", None) is None
    if isinstance(data, (torch.Tensor, torch.utils.data.Dataset, _data.Dataset, str, bytes)):
        return False
    if type(data).__module__ == "numpy":
        return False
    return isinstance(data, (list, tuple)) or hasattr(data, "__iter__")


def alternate(labelled, unlabelled, labelled_first: bool = True):
    """Batches of labelled and unlabelled data in turn, as semi-supervised recipes take
    them (Kingma et al. 2014's M2, Pyro's ss-VAE, scANVI): labelled items are passed
    whole (``model(x, y)``); unlabelled items pass their first element only
    (``model(x)``, so ``y`` takes its default, None). When one runs out, the rest of
    the other follows. The result can be read once per epoch.

    :param labelled: an iterable of ``(x, y, ...)`` batches (a DataLoader, a list).
    :param unlabelled: an iterable of ``x`` or ``(x, ...)`` batches.
    :param bool labelled_first: begin with a labelled batch.
    """
    return _Alternating(labelled, unlabelled, labelled_first)


class _Alternating:
    def __init__(self, labelled, unlabelled, labelled_first):
        self.labelled, self.unlabelled, self.labelled_first = labelled, unlabelled, labelled_first

    def __len__(self):
        return len(self.labelled) + len(self.unlabelled)

    def _streams(self):
        labelled = (Arguments(tuple(item)) for item in self.labelled)
        unlabelled = (
            Arguments((item[0],) if isinstance(item, (tuple, list)) else (item,))
            for item in self.unlabelled
        )
        return (labelled, unlabelled) if self.labelled_first else (unlabelled, labelled)

    def firsts(self) -> list:
        """The first batch of each stream, in the order they come."""
        return [item for stream in self._streams() for item in itertools.islice(stream, 1)]

    def __iter__(self):
        first, second = self._streams()
        for pair in itertools.zip_longest(first, second):
            for item in pair:
                if item is not None:
                    yield item
