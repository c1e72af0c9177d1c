"""Who is measured: torch.nn (cuDNN on CUDA, native kernels on CPU) and rnnfast's two backends.

rnnfast's cells are picked up from what the package exposes, so a cell it does not have yet is listed
as skipped rather than failing the run.
"""

from dataclasses import dataclass

import torch
from torch import nn

import rnnfast

from .cases import Case

TORCH_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
RNNFAST_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
BASELINE = "torch.nn"


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str | None  # rnnfast backend, None for torch.nn
    needs_cuda: bool = False


PROVIDERS = (
    Provider(BASELINE, None),
    Provider("rnnfast-triton", "triton", needs_cuda=True),
    Provider("rnnfast-torch", "torch"),
)
PROVIDER_NAMES = tuple(provider.name for provider in PROVIDERS)


def skip_reason(provider: Provider, case: Case, device: torch.device) -> str | None:
    """Why `provider` cannot run `case` on `device`, or None when it can."""
    if case.gpu_only and device.type != "cuda":
        return "GPU-only case (too slow on CPU)"
    if provider.needs_cuda and device.type != "cuda":
        return "needs CUDA"
    if provider.backend is not None and getattr(rnnfast, RNNFAST_NAMES[case.cell], None) is None:
        return f"rnnfast.{RNNFAST_NAMES[case.cell]} not available yet"
    return None


def build_module(provider: Provider, case: Case, device: torch.device) -> nn.Module:
    """The layer of `case` for `provider`, with torch.nn's initialisation (seeded: every provider of a
    case gets the same weights)."""
    torch.manual_seed(0)
    kwargs = {"num_layers": case.num_layers, "bidirectional": case.bidirectional, "batch_first": True}
    reference = TORCH_CLASSES[case.cell](case.input_size, case.hidden_size, **kwargs)
    if provider.backend is None:
        module = reference
    else:
        rnnfast_class = getattr(rnnfast, RNNFAST_NAMES[case.cell])
        module = rnnfast_class(case.input_size, case.hidden_size, backend=provider.backend, **kwargs)
        module.load_state_dict(reference.state_dict())
    return module.to(device=device, dtype=case.dtype)
