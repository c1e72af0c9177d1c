"""Test set-up: Triton's interpreter runs the kernels on CPU tensors, so it must be on before any
import of triton (here, before the test modules import rnnfast)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def garbage_filled_buffers(monkeypatch):
    """Fresh floating-point buffers start as NaN, so a kernel that forgets a store fails loudly; integer
    ones as a third of their dtype's maximum, so that counters or flags that must start at zero do not
    happen to."""

    def filled(make):
        def wrapper(*args, **kwargs):
            tensor = make(*args, **kwargs)
            if tensor.device.type == "meta":
                return tensor
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
            elif tensor.dtype != torch.bool and not tensor.is_complex():
                tensor.fill_(torch.iinfo(tensor.dtype).max // 3)
            return tensor

        return wrapper

    monkeypatch.setattr(torch, "empty", filled(torch.empty))
    monkeypatch.setattr(torch, "empty_like", filled(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", filled(torch.Tensor.new_empty))
