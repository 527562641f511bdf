"""Mixed precision: the context a training step's loss runs under (bfloat16 autocast
with float32 network outputs, or nothing)."""

from __future__ import annotations

import contextlib

import torch


def _float32_outputs(module, inputs, output):
    """Network outputs back to float32, so every density and sum after them is float32."""
    if torch.is_tensor(output):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, tuple):
        return tuple(_float32_outputs(module, inputs, o) for o in output)
    return output


def _autocast(precision, device, module):
    """A context factory for the loss under ``precision``: bfloat16 autocast, with the
    module's children (its networks) returning float32 while it is entered."""
    if precision in (None, "fp32", "float32"):
        return contextlib.nullcontext
    if precision not in ("bf16", "bfloat16"):
        raise ValueError(f"precision must be None or 'bf16', got {precision!r}")
    if module is None:
        raise ValueError("precision='bf16' needs a model that is a torch.nn.Module")
    if device.type == "cuda":
        try:
            supported = torch.cuda.is_bf16_supported()
        except Exception:  # an emulated or partial CUDA
            supported = False
        if not supported:
            raise ValueError(f"precision='bf16' is not supported on {device}")
    elif device.type != "cpu":
        raise ValueError(f"precision='bf16' is supported on CPU and CUDA, not {device.type}")

    @contextlib.contextmanager
    def bf16():
        hooks = [child.register_forward_hook(_float32_outputs) for child in module.children()]
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        finally:
            for handle in hooks:
                handle.remove()

    return bf16
