"""Test set-up: Triton's interpreter runs the kernels on CPU tensors, so it must be on before any
import of triton (here, before the test modules import rnnfast)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (`-n auto`, the README's test command) the workers share the cores: each takes its
# share for torch's own threads instead of all of them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


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


def pytest_configure(config):
    # pytest-xdist's mark (test modules whose expensive fixtures one worker makes once), known without it too.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one pytest-xdist worker")
