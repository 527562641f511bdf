"""Constructor options that every probae module records, so that a model can be
written out as JSON and built again.

Every probae model, prior, likelihood, network and corruption is a
:class:`Configurable`: the arguments its constructor was called with are kept, and
:attr:`Configurable.config` turns them into plain JSON, nested for the modules it was
given::

    {"class": "VAE",
     "options": {"x_shape": [64], "z_dim": 8,
                 "prior": {"class": "priors.GaussianMixture",
                           "options": {"z_dim": 8, "components": 10, ...}},
                 ...}}

:func:`build` reverses it, looking classes up only among probae's own and those a
user registered with :func:`register`: no module is ever imported by name from a
file, so a configuration cannot run code. A module given twice (the encoder a
``VampPrior`` shares with its model) is written once and referred to by path
(``{"same_as": "prior.encoder"}``), and built once again. What probae cannot rebuild
(a network of the user's own, a function) is written as ``{"custom": "pkg.Name"}``;
:func:`custom_parts` lists those places.
"""

from __future__ import annotations

import functools
import inspect
import numbers

import torch
from torch import nn

__all__ = ["Configurable", "build", "custom_parts", "register"]

#: classes :func:`build` may construct, by the name written in configurations
_REGISTRY: dict[str, type] = {}


def _public_name(cls: type) -> str:
    """``VAE`` for a model family, ``priors.GaussianMixture`` for a part, and the full
    dotted path for a user's own class."""
    module = cls.__module__
    if module.startswith("probae.models"):
        return cls.__name__
    if module.startswith("probae."):
        return f"{module.split('.')[1]}.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def register(cls: type) -> type:
    """Lets :func:`probae.load` rebuild instances of a user's own
    :class:`Configurable` class (a prior or network of one's own); usable as a class
    decorator. Without it such a part is saved as weights only, and loading needs the
    model built by hand (``probae.load(path, model=...)``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Configurable)):
        raise TypeError(
            "register takes a subclass of probae's Configurable (every probae prior, "
            f"likelihood, network and model is one), got {cls!r}"
        )
    _REGISTRY[_public_name(cls)] = cls
    return cls


def _recording(init):
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        # The outermost constructor records; the base classes' __init__ calls it
        # makes through super() do not overwrite what the user asked for.
        if "_options" not in self.__dict__:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                pass  # the constructor itself reports the bad call
            else:
                bound.apply_defaults()
                options = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        options.update(value)
                    elif kind is not inspect.Parameter.VAR_POSITIONAL:
                        options[name] = value
                object.__setattr__(self, "_options", options)
        init(self, *args, **kwargs)

    return __init__


class Configurable:
    """Mixin that records the constructor's arguments (see the module docstring).

    A subclass may list in ``_live_options`` the options whose current value is read
    from the attribute of the same name when the configuration is written (``beta``
    of a model, which a user may set after construction).
    """

    _live_options: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])
        if cls.__module__.startswith("probae.") and not cls.__name__.startswith("_"):
            _REGISTRY[_public_name(cls)] = cls

    @property
    def config(self) -> dict:
        """The constructor options as plain JSON: ``{"class": ..., "options": ...}``.
        ``build(model.config)`` makes a model of the same class and options (with new
        weights)."""
        return _to_json(self, {}, "")


def _options_of(obj) -> dict:
    options = dict(obj.__dict__.get("_options", {}))
    for name in type(obj)._live_options:
        if name in options:
            options[name] = getattr(obj, name)
    return options


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _to_json(value, seen: dict, path: str):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return value.item()
        # Constructor tensors initialize weights (VampPrior's pseudo-inputs): the saved
        # weights hold their values; building needs only the shape.
        return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return [_to_json(v, seen, _join(path, i)) for i, v in enumerate(value)]
    if isinstance(value, type) and issubclass(value, nn.Module):
        if getattr(nn, value.__name__, None) is value:
            return {"torch.nn": value.__name__}
        return {"custom": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, nn.Module) or isinstance(value, Configurable):
        if id(value) in seen:
            return {"same_as": seen[id(value)]}
        seen[id(value)] = path
        cls = type(value)
        name = _public_name(cls)
        if isinstance(value, Configurable) and _REGISTRY.get(name) is cls:
            options = {
                key: _to_json(v, seen, _join(path, key)) for key, v in _options_of(value).items()
            }
            return {"class": name, "options": options}
        return {"custom": name}
    name = getattr(value, "__qualname__", type(value).__qualname__)
    return {"custom": f"{getattr(value, '__module__', type(value).__module__)}.{name}"}


def custom_parts(config) -> list:
    """The paths (``"encoder"``, ``"prior.transforms.0"``) of the parts of a
    configuration that probae cannot rebuild, with what they were: ``[(path, name)]``."""
    found = []

    def walk(node, path):
        if isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, _join(path, i))
        elif isinstance(node, dict):
            if "custom" in node:
                found.append((path or "the model", node["custom"]))
            for key, v in node.get("options", {}).items():
                walk(v, _join(path, key))

    walk(config, "")
    return found


_DTYPES = {"float32", "float64", "float16", "bfloat16"}


def build(config: dict):
    """Builds the object a configuration describes (:attr:`Configurable.config`).

    :raises ValueError: naming the place, for an unknown class, a part probae cannot
        rebuild, or a malformed configuration.
    """
    if not isinstance(config, dict) or "class" not in config and "custom" not in config:
        raise ValueError(
            'a model configuration must be a JSON object {"class": ..., "options": ...}, '
            f"got {type(config).__name__}"
        )
    return _from_json(config, {}, "")


def _from_json(node, built: dict, path: str):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_from_json(v, built, _join(path, i)) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        raise ValueError(f"configuration at {path or 'the top'} holds a {type(node).__name__}")
    where = path or "the model"
    if "same_as" in node:
        if node["same_as"] not in built:
            raise ValueError(f"configuration at {where} refers to {node['same_as']!r}, not built")
        return built[node["same_as"]]
    if "custom" in node:
        raise ValueError(
            f"{where} is a {node['custom']}, which probae cannot rebuild from a configuration; "
            "build the model yourself and load the weights into it: "
            "probae.load(path, model=your_model)"
        )
    if "tensor" in node:
        if node.get("dtype") not in _DTYPES:
            raise ValueError(
                f"configuration at {where}: unknown tensor dtype {node.get('dtype')!r}"
            )
        return torch.zeros(*node["tensor"], dtype=getattr(torch, node["dtype"]))
    if "torch.nn" in node:
        cls = getattr(nn, str(node["torch.nn"]), None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(
                f"configuration at {where}: torch.nn has no module {node['torch.nn']!r}"
            )
        return cls
    if "class" not in node:
        raise ValueError(f"configuration at {where} has no 'class'")
    name = node["class"]
    if name not in _REGISTRY:
        raise ValueError(
            f"configuration at {where} names an unknown class {name!r}; known: "
            f"{sorted(_REGISTRY)} (a class of your own must be registered with "
            "probae.register before loading)"
        )
    options = node.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"configuration at {where}: 'options' must be a JSON object")
    kwargs = {key: _from_json(v, built, _join(path, key)) for key, v in options.items()}
    try:
        obj = _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot build {name} at {where} from its configuration: {error}"
        ) from None
    built[path] = obj
    return obj
