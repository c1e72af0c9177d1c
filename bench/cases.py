"""What is measured: one Case per layer configuration, and the grids that list them."""

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")  # torch's mode names
MODES = ("inference", "forward", "forward+backward")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class Case:
    cell: str
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dtype: torch.dtype = torch.float32
    # Too slow for the CPU (a GPU reference point); CPU runs list it as skipped.
    gpu_only: bool = False
    # Sequences of unequal lengths, uniform between T/4 and T (make_lengths): fed padded, packed or as lengths=.
    varlen: bool = False
    # Which sweeps (plot axes) the case belongs to: "hidden", "seq"; not part of its identity.
    sweeps: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def name(self) -> str:
        parts = [self.cell, f"B{self.batch}", f"T{self.seq_len}", f"I{self.input_size}", f"H{self.hidden_size}"]
        if self.num_layers > 1:
            parts.append(f"layers{self.num_layers}")
        if self.bidirectional:
            parts.append("bidir")
        if self.varlen:
            parts.append("varlen")
        parts.append(DTYPE_NAMES[self.dtype])
        return "-".join(parts)


def _merge(cases: Iterable[Case]) -> list[Case]:
    """Drops repeated cases (keeping the first position) and unions their sweeps."""
    merged: dict[Case, Case] = {}
    for case in cases:
        if case in merged:
            previous = merged[case]
            merged[case] = Case(**{**previous.__dict__, "sweeps": previous.sweeps | case.sweeps})
        else:
            merged[case] = case
    return list(merged.values())


def _hidden_sweep(cell: str, batch: int, seq_len: int, hidden_sizes: Iterable[int], dtype=torch.float32):
    return [Case(cell, batch, seq_len, h, h, dtype=dtype, sweeps=frozenset({"hidden"})) for h in hidden_sizes]


def _seq_sweep(cell: str, batch: int, hidden: int, seq_lens: Iterable[int], dtype=torch.float32):
    return [Case(cell, batch, t, hidden, hidden, dtype=dtype, sweeps=frozenset({"seq"})) for t in seq_lens]


HIDDEN_SIZES = (64, 128, 256, 512, 1024)
# FlashRNN's and cuDNN's LSTM reference point: far too slow for a CPU.
FLASHRNN_CASE = Case("lstm", 16, 1024, 768, 768, dtype=torch.bfloat16, gpu_only=True)
# Issue 11's target (cuDNN's PERSIST_STATIC runs it: fp16), then the same layer at smaller H, where a
# step's fixed costs (grid barrier, L2 round trip, gate math) are all there is: what settles the latency
# model's assumed constants (bench/model.py) against a measurement.
GPU_FIRST_CASES = [
    Case("lstm", 16, 1024, hidden, hidden, dtype=torch.float16, gpu_only=True) for hidden in (768, 256, 64)
]

# Issue 26's stack (a 2-layer fp16 LSTM, both passes one wavefront with W_ih on chip on an H100) and a
# small one (rnnfast/wavefront.py); the GRU's alike.
WAVEFRONT_CASES = [
    Case(cell, 16, 1024, hidden, hidden, dtype=torch.float16, num_layers=2, gpu_only=True)
    for cell in ("lstm", "gru")
    for hidden in (768, 128)
]


def smoke_grid() -> list[Case]:
    """Every cell at toy sizes, plus a stacked bidirectional layer: runs in seconds."""
    cases = [Case(cell, 2, 5, 8, 16) for cell in CELLS]
    cases.append(Case("lstm", 2, 5, 8, 16, num_layers=2, bidirectional=True))
    cases.append(Case("gru", 3, 8, 8, 16, varlen=True))
    return cases


def default_grid() -> list[Case]:
    """Sized for a few minutes on a 2-core CPU: every cell at the B64 T100 I=H=256 reference point, at
    B16 T50 H64 (where per-op overhead shows) and at T=20000 B2 H16 (where per-step overhead is all there
    is), the LSTM over hidden size (B16 T50) and sequence length (B16 H128), batches 1 and 8, a stacked
    bidirectional layer, variable lengths at the reference point, and the GPU-only FlashRNN point
    (skipped on CPU)."""
    cases = targets_grid()
    cases += _hidden_sweep("lstm", 16, 50, HIDDEN_SIZES)
    cases += _seq_sweep("lstm", 16, 128, (25, 50, 100, 200, 400))
    cases += [Case("lstm", batch, 100, 256, 256) for batch in (1, 8)]
    cases += [Case("lstm", 16, 100, 256, 256, num_layers=2, bidirectional=True)]
    cases.append(Case("lstm", 64, 100, 256, 256, bidirectional=True, varlen=True))
    cases.append(FLASHRNN_CASE)
    return _merge(cases)


def full_grid() -> list[Case]:
    """The GPU grid, most wanted first (a GPU is lent for minutes: --time-budget stops the run in order):
    issue 11's target and its smaller-H points, the FlashRNN point, issue 26's wavefront stacks, then every
    cell over hidden size and sequence length in fp32 and bf16, fp16 at the reference point, small batches,
    stacked and bidirectional layers, variable lengths."""
    cases = [*GPU_FIRST_CASES, FLASHRNN_CASE, *WAVEFRONT_CASES]
    for cell in CELLS:
        for dtype in (torch.float32, torch.bfloat16):
            cases += _hidden_sweep(cell, 64, 100, HIDDEN_SIZES, dtype)
            cases += _seq_sweep(cell, 64, 256, (50, 100, 200, 500, 1000, 2000), dtype)
            cases += [Case(cell, batch, 100, 256, 256, dtype=dtype) for batch in (1, 8, 256)]
            cases += [Case(cell, 64, 100, 256, 256, dtype=dtype, num_layers=layers, bidirectional=bidir)
                      for layers in (1, 2, 4) for bidir in (False, True)]  # fmt: skip
        cases.append(Case(cell, 64, 100, 256, 256, dtype=torch.float16))
        cases += [Case(cell, 64, t, 256, 256, bidirectional=True, varlen=True) for t in (100, 500)]
        cases += [Case(cell, batch, 1024, 768, 768, dtype=torch.bfloat16) for batch in (1, 8)]
    cases.append(FLASHRNN_CASE)
    return _merge(cases)


def targets_grid() -> list[Case]:
    """The CPU targets of rnnfast's default backend against torch.nn (README): every cell at the
    B64 T100 I=H=256 reference point, at B16 T50 H64 and at T=20000 B2 H16."""
    return [Case(cell, b, t, h, h) for b, t, h in ((64, 100, 256), (16, 50, 64), (2, 20000, 16)) for cell in CELLS]


def readme_grid() -> list[Case]:
    """The README's CPU rows: the reference point B64 T100 I=H=256 for the LSTM (oneDNN's fused kernels)
    and the GRU, and B16 T50 I=H=64 for the GRU and the tanh RNN (where the scan's own backward wins)."""
    shapes = (("lstm", 64, 100, 256), ("gru", 64, 100, 256), ("gru", 16, 50, 64), ("rnn_tanh", 16, 50, 64))
    return [Case(cell, b, t, h, h) for cell, b, t, h in shapes]


def dispatch_grid() -> list[Case]:
    """The CPU shapes rnnfast's auto-backend rules (rnnfast/dispatch.py) were measured on: every cell from
    tiny to large hidden sizes, batch 1, long sequences, and variable lengths, small and large."""
    cases = []
    for cell in CELLS:
        cases += _hidden_sweep(cell, 16, 50, (16, 64, 256, 1024))
        cases += [Case(cell, 64, 100, 256, 256), Case(cell, 1, 100, 256, 256), Case(cell, 2, 2000, 16, 16)]
        cases += [
            Case(cell, batch, t, h, h, bidirectional=True, varlen=True)
            for batch, t, h in ((16, 50, 64), (64, 100, 256))
        ]
    # Around the GRU's fixed-length training rule (native from batch 128 and batch x hidden 8192 on).
    cases += [Case("gru", batch, 100, h, h) for batch, h in ((32, 128), (32, 256), (16, 512), (64, 128), (128, 128))]
    return _merge(cases)


GRIDS = {
    "smoke": smoke_grid,
    "default": default_grid,
    "full": full_grid,
    "targets": targets_grid,
    "readme": readme_grid,
    "dispatch": dispatch_grid,
}


def make_inputs(case: Case, device: torch.device) -> torch.Tensor:
    """The input sequence of a case, batch_first [B, T, I] (the one place inputs are built)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, case.seq_len, case.input_size, generator=generator)
    return x.to(device=device, dtype=case.dtype)


def make_lengths(case: Case) -> torch.Tensor:
    """Per-sequence lengths of a varlen case, uniform between T/4 and T (CPU int64, any order)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(max(1, case.seq_len // 4), case.seq_len + 1, (case.batch,), generator=generator)
