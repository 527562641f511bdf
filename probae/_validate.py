"""Argument checks shared by every public constructor and function: each names the
argument at fault and what it expects. Integer-like NumPy and PyTorch scalars
(``np.int64(4)``, ``torch.tensor(4)``) are accepted where integers are, and real
NumPy/PyTorch scalars where numbers are; booleans are neither."""

from __future__ import annotations

import math
import numbers

import torch

#: the largest count of importance samples or particles per point accepted: beyond it,
#: one estimate would run for hours on any machine (and its Monte Carlo error is already
#: far below the estimator's bias)
MAX_SAMPLES = 10**6
#: seeds are handed to Python, NumPy and PyTorch; NumPy takes 32 bits
MAX_SEED = 2**32 - 1


def _scalar(value):
    """A Python scalar for a 0-d tensor or NumPy scalar; the value itself otherwise."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            return value
        return value.item()
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``.

    :raises TypeError: if it is not an integer (a bool, a float, a string).
    :raises ValueError: if it is out of range.
    """
    scalar = _scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    scalar = int(scalar)
    if minimum is not None and scalar < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and scalar > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return scalar


def value_range(x: torch.Tensor) -> tuple[float, float]:
    """``(min, max)`` of a floating-point tensor in one pass and one host read; NaN
    anywhere makes both NaN, so ``math.isfinite`` of the two says whether every value is
    finite (at a tenth of the cost of ``torch.isfinite(x).all()`` on the CPU)."""
    if x.numel() == 0:
        return 0.0, 0.0
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()
    return low, high


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of a floating-point tensor is finite (see :func:`value_range`)."""
    low, high = value_range(x)
    return math.isfinite(low) and math.isfinite(high)


def positive_int(name: str, value) -> int:
    return integer(name, value, minimum=1)


def number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval given (open or closed at each end).

    :raises TypeError: if it is not a real number.
    :raises ValueError: if it is NaN, infinite or out of the interval.
    """
    scalar = _scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    scalar = float(scalar)
    below = low is not None and (scalar <= low if low_open else scalar < low)
    above = high is not None and (scalar >= high if high_open else scalar > high)
    if not math.isfinite(scalar) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, "
        span += f"{'inf' if high is None else f'{high:g}'}{right}"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")
    return scalar


def positive(name: str, value) -> float:
    try:
        return number(name, value, low=0.0, low_open=True)
    except ValueError:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    except TypeError:
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None


def boolean(name: str, value) -> bool:
    scalar = _scalar(value)
    if not isinstance(scalar, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return scalar


def widths(name: str, value) -> tuple:
    """A sequence of positive layer widths (possibly empty) as a tuple of ints."""
    if (
        isinstance(value, (str, bytes))
        or not hasattr(value, "__iter__")
        or (isinstance(value, torch.Tensor) and value.dim() == 0)
    ):
        raise TypeError(f"{name} must be a sequence of positive integers, got {value!r}")
    out = []
    for width in list(value):
        try:
            out.append(integer(name, width, minimum=1))
        except (TypeError, ValueError):
            raise (TypeError if not isinstance(_scalar(width), numbers.Integral) else ValueError)(
                f"{name} must be a sequence of positive integers, got {value!r}"
            ) from None
    return tuple(out)


def seed(name: str, value) -> int | None:
    return None if value is None else integer(name, value, minimum=0, maximum=MAX_SEED)


def samples(name: str, value) -> int:
    """A count of Monte Carlo samples per point, bounded by :data:`MAX_SAMPLES`."""
    count = positive_int(name, value)
    if count > MAX_SAMPLES:
        raise ValueError(
            f"{name}={count} is more than {MAX_SAMPLES} samples per point, which would run "
            "for hours; the estimate's Monte Carlo error is small long before that"
        )
    return count
