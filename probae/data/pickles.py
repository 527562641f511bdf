"""Reading the pickles of arrays a data set ships in (the CIFAR-10 python files) without
running code: a :class:`pickle.Unpickler` that builds NumPy arrays, dicts, lists,
numbers, bytes and strings, and refuses any other class or function a file names before
it is called, so that a planted file runs nothing."""

from __future__ import annotations

import pickle

import numpy as np

__all__ = ["read_array_pickle"]


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the CIFAR-10 python files hold: dicts,
    lists, numbers, bytes and strings, and NumPy arrays through NumPy's own array
    reconstruction. Any other class or function named in the file is refused before
    it is called, so a planted file cannot run code."""

    def find_class(self, module, name):
        allowed = _ARRAY_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which is not part of the format (only NumPy "
                "arrays, lists, dicts, numbers, bytes and strings are read)"
            )
        return allowed()


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as reconstruct
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct as reconstruct
    return reconstruct


def _frombuffer():
    try:
        from numpy._core.numeric import _frombuffer as frombuffer
    except ImportError:  # NumPy 1
        from numpy.core.numeric import _frombuffer as frombuffer
    return frombuffer


def _encode():
    import codecs

    def encode(text, encoding="latin1"):  # how Python 3 pickles bytes at protocol 2
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("bytes in an unexpected encoding")
        return codecs.encode(text, "latin1")

    return encode


#: the globals a pickled NumPy array names (NumPy 1 and 2, protocols 2 to 5)
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
}


def read_array_pickle(path):
    """Reads a pickle of arrays and plain containers (the CIFAR-10 python files) without
    running anything it names: :class:`pickle.Unpickler` restricted to NumPy's array
    reconstruction, dicts, lists, numbers, bytes and strings.

    :raises ValueError: naming the file, if it names any other class or function, or is
        not a pickle.
    """
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path!r} is not a readable array pickle: {error}") from None
