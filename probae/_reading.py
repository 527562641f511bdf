"""Reading a torch Dataset whole into memory, and the indexed view of one that batches
read: shared by :mod:`probae._common` (which checks data given in any form) and
:mod:`probae.batches` (which streams it), so that neither imports the other."""

from __future__ import annotations

import torch

from . import data as _data


class _Indexed(torch.utils.data.Dataset):
    """Items ``(index, x)`` or ``(index, x, y)``: the index lets conditions given as a
    tensor follow the points, the label feeds ``condition="label"``."""

    def __init__(self, dataset, with_label: bool):
        self.dataset, self.with_label = dataset, with_label

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self._entry(index, self.dataset[index])

    def __getitems__(self, indices):
        # a data set that reads a batch at once (``__getitems__``, as a DataLoader
        # asks it) keeps doing so through this wrapper
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is None:
            return [self[i] for i in indices]
        return [self._entry(i, item) for i, item in zip(indices, getitems(indices), strict=True)]

    def _entry(self, index, item):
        if isinstance(item, (tuple, list)):
            x = item[0]
            if self.with_label:
                return index, torch.as_tensor(x), torch.as_tensor(item[1])
        else:
            x = item
        return index, torch.as_tensor(x)


def _tensor_dataset(data):
    """The tensors of a TensorDataset: ``(x, y)`` or ``(x, None)``."""
    tensors = data.tensors
    return tensors[0], tensors[1] if len(tensors) > 1 else None


def _read_all(dataset, num_workers, x_shape=None) -> _data.Dataset:
    first = dataset[0]
    with_label = isinstance(first, (tuple, list)) and len(first) > 1
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset, with_label), batch_size=1024, num_workers=num_workers
    )
    xs, ys = [], []
    for item in loader:
        xs.append(item[1].float())
        if with_label:
            ys.append(item[2])
    y = torch.cat(ys) if ys else None
    if y is not None and (y.dim() != 1 or y.is_floating_point()):
        y = None  # not class labels
    return _data.Dataset(_shaped(torch.cat(xs), x_shape), None if y is None else y.long())


def _shaped(x, x_shape):
    """Points in the model's shape where only the layout differs (images ``(C, H, W)``
    for a model of flat vectors, or the reverse)."""
    if x_shape is None or tuple(x.shape[1:]) == tuple(x_shape):
        return x
    if x.shape[1:].numel() == torch.Size(x_shape).numel():
        return x.reshape(x.shape[0], *x_shape)
    return x


def read_all(data, x_shape=None) -> _data.Dataset:
    """A torch Dataset or DataLoader read whole into a :class:`probae.data.Dataset`
    (points reshaped to ``x_shape`` where only the layout differs)."""
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, torch.utils.data.TensorDataset):
        x, y = _tensor_dataset(data)
        return _data.Dataset(_shaped(x, x_shape), y)
    return _read_all(data, 0, x_shape)
