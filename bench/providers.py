"""Who is measured: torch.nn (cuDNN on CUDA, native kernels on CPU), rnnfast with its default backend
("auto": what a user gets), and each of rnnfast's backends on its own."""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast

from .cases import Case, make_lengths

# A case's cell (torch's mode name) -> the class name in torch.nn and rnnfast, and its constructor options.
LAYERS = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}
BASELINE = "torch.nn"


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str | None  # rnnfast backend, None for torch.nn
    needs_cuda: bool = False
    # How a varlen case's batch is fed: "padded" (lengths ignored: the cost of not handling them),
    # "packed" (a PackedSequence, torch.nn's way) or "lengths" (rnnfast's lengths= on the padded batch).
    feed: str = "padded"


PROVIDERS = (
    Provider(BASELINE, None),
    Provider("rnnfast", "auto"),
    Provider("rnnfast-triton", "triton", needs_cuda=True),
    Provider("rnnfast-scan", "scan"),
    Provider("torch.nn-packed", None, feed="packed"),
    Provider("rnnfast-lengths", "auto", feed="lengths"),
    Provider("rnnfast-packed", "auto", feed="packed"),
    Provider("rnnfast-triton-lengths", "triton", needs_cuda=True, feed="lengths"),
    Provider("rnnfast-triton-packed", "triton", needs_cuda=True, feed="packed"),
    Provider("rnnfast-scan-lengths", "scan", feed="lengths"),
    Provider("rnnfast-scan-packed", "scan", feed="packed"),
)
PROVIDER_NAMES = tuple(provider.name for provider in PROVIDERS)


def skip_reason(provider: Provider, case: Case, device: torch.device) -> str | None:
    """Why `provider` cannot run `case` on `device`, or None when it can."""
    if case.gpu_only and device.type != "cuda":
        return "GPU-only case (too slow on CPU)"
    if provider.feed != "padded" and not case.varlen:
        return "fixed-length case"
    if provider.needs_cuda and device.type != "cuda":
        return "needs CUDA"
    return None


def build_module(provider: Provider, case: Case, device: torch.device) -> nn.Module:
    """The layer of `case` for `provider`, with torch.nn's initialisation (seeded: every provider of a
    case gets the same weights)."""
    torch.manual_seed(0)
    name, options = LAYERS[case.cell]
    kwargs = {"num_layers": case.num_layers, "bidirectional": case.bidirectional, "batch_first": True, **options}
    reference = getattr(nn, name)(case.input_size, case.hidden_size, **kwargs)
    if provider.backend is None:
        module = reference
    else:
        module = getattr(rnnfast, name)(case.input_size, case.hidden_size, backend=provider.backend, **kwargs)
        module.load_state_dict(reference.state_dict())
    module = module.to(device=device, dtype=case.dtype)
    return FedLayer(module, provider.feed, make_lengths(case)) if case.varlen else module


class FedLayer(nn.Module):
    """A batch-first layer fed a varlen batch the provider's way; returns (output tensor, final state)."""

    def __init__(self, layer: nn.Module, feed: str, lengths: torch.Tensor):
        super().__init__()
        self.layer, self.feed, self.lengths = layer, feed, lengths

    def forward(self, x: torch.Tensor):
        if self.feed == "padded":
            return self.layer(x)
        if self.feed == "lengths":
            return self.layer(x, lengths=self.lengths)
        output, final = self.layer(pack_padded_sequence(x, self.lengths, batch_first=True, enforce_sorted=False))
        return output.data, final
