"""Which implementation runs a call: the one place that decides.

Every forward of an rnnfast module asks `choose_path` once. The answer is one of three paths:

- NATIVE: torch's own recurrent kernels, called exactly as torch.nn calls them (oneDNN's fused LSTM and
  torch's C++ loops on CPU, cuDNN on CUDA; rnnfast/native.py);
- SCAN: rnnfast's scan in plain PyTorch ops, with its own backward (rnnfast/pytorch_scan.py);
- TRITON: rnnfast's Triton kernels (rnnfast/kernels/; CPU tensors only through Triton's interpreter).

The `backend=` argument of every module (else the RNNFAST_BACKEND environment variable, else "auto")
narrows the choice: "triton" always runs TRITON (refused, with the reason, where it cannot run), "scan"
always runs SCAN, "auto" decides per call, by device, dtype, tracing and the installed Triton, and on CPU
by rules measured once (`cpu_native_wins`). "torch", the former name of "scan", is still accepted.

On CPU, "auto" runs whichever of NATIVE and SCAN is faster for the call, by fixed rules measured with
`python -m bench --dispatch` (torch.nn against rnnfast-scan; AMD EPYC, 2 cores, torch 2.13; never by timing
at run time). Both give torch.nn's results. What the measurements showed:

- Inference: torch's C++ loops (oneDNN's fused LSTM, the generic GRU/Elman loop, the packed loop for
  variable lengths) pay less per step than the scan's Python loop: native as fast or faster everywhere
  (LSTM 2-12x, GRU and RNN 1.0-2x, packed 1.1-3x), within noise at worst (a few RNN shapes).
- LSTM training, fixed lengths: oneDNN's LSTM has a fused backward: 2-12x faster than the scan (fp32 and
  bf16; float64 and proj_size, which run torch's generic loop, within 0.8-1.3x).
- GRU and RNN training, and every cell trained on variable lengths: torch's CPU kernels record every op
  of every step for autograd and replay them backwards, so the scan with its own backward wins: 0.14-0.9x
  of torch.nn (GRU B1 T100 H256: 0.14x), LSTM packed 0.6-0.9x. Except the GRU on fixed lengths from batch
  128 (and batch x hidden 8192) on, where the scan took 0.97-1.42x of torch.nn's time at B128 T100 H128
  over six runs (slower at the median), against 0.95-1.01x at B64 H256 and less below; and the GRU on
  variable lengths once batch x hidden reaches 8192: torch's packed loop only multiplies the valid rows
  (the scan took 0.68-0.97x of its time below that size, 0.95-1.21x from there on). docs/benchmarks.md
  has the commands and the tables.
- Cells (one step): torch's cell ops cost 15-800 us against the one-step scan's 75-4000 us: native.
"""

import functools
import importlib.metadata
import importlib.util
import os
import re
import warnings

import torch

NATIVE, SCAN, TRITON = "native", "scan", "triton"
BACKENDS = ("auto", TRITON, SCAN)
# Former backend names, accepted with a FutureWarning: "torch" named rnnfast's own PyTorch scan, which
# read as torch's kernels.
RENAMED_BACKENDS = {"torch": SCAN}
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The oldest Triton every kernel has been compiled with (offline, for sm_80 and sm_90; torch 2.11's CUDA
# wheels pin it). Older releases lack what the kernels are written with (tuples of tensors, batched dots,
# the launcher's introspection): there backend "auto" runs torch's own CUDA kernels, and "triton" is refused.
MIN_TRITON = (3, 6)
try:
    _TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
except (ImportError, ValueError):  # a broken or blocked install: NATIVE and SCAN run alone
    _TRITON_AVAILABLE = False

# GRU training on CPU runs torch's own loop from this batch x hidden size on: on variable lengths at any
# batch, on fixed lengths from GRU_FIXED_NATIVE_BATCH rows on (below it the scan is as fast or faster).
GRU_NATIVE_SIZE = 8192
GRU_FIXED_NATIVE_BATCH = 128


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, which Triton reads when imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tracing(x: torch.Tensor) -> bool:
    """True while torch.compile or torch.export traces the call, or for tensor subclasses (fake tensors):
    then only rnnfast's custom ops may run, whose fake implementations give shapes without computing."""
    return torch.compiler.is_compiling() or type(x) is not torch.Tensor


@functools.cache  # read once: a metadata lookup scans the installed distributions
def installed_triton_version(read=importlib.metadata.version) -> tuple[int, int] | None:
    """(major, minor) of the installed Triton, from its package metadata (Triton itself is not imported):
    "triton", or "pytorch-triton" as torch's nightlies name it; None when neither names a version."""
    for distribution in ("triton", "pytorch-triton"):
        try:
            found = re.match(r"(\d+)\.(\d+)", read(distribution))
        except importlib.metadata.PackageNotFoundError:
            continue
        if found:
            return int(found[1]), int(found[2])
    return None


def triton_problem(version: tuple[int, int] | None = None) -> str | None:
    """Why the Triton kernels cannot run here (completing "backend='triton' ..."), or None when they can.
    A Triton whose version cannot be read (a source build) is trusted."""
    if not _TRITON_AVAILABLE:
        return "needs the triton package, which is not installed"
    version = version or installed_triton_version()
    if version is not None and version < MIN_TRITON:
        return (
            f"needs triton >= {MIN_TRITON[0]}.{MIN_TRITON[1]}, found {version[0]}.{version[1]} (backend='auto' "
            "runs torch's own kernels with it)"
        )
    return None


def backend_name(backend: str | None) -> str | None:
    """`backend` checked (a ValueError names the accepted values) and former names mapped to today's."""
    if backend in RENAMED_BACKENDS:
        warnings.warn(
            f"backend={backend!r} is deprecated and will be removed: it runs rnnfast's own PyTorch scan, "
            f"now named backend={RENAMED_BACKENDS[backend]!r}",
            FutureWarning,
            stacklevel=4,  # the module constructor's caller
        )
        return RENAMED_BACKENDS[backend]
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def requested_backend(backend: str | None) -> str:
    """The backend a module asked for: its own, else the RNNFAST_BACKEND environment variable, else "auto"."""
    return backend or backend_name(os.environ.get("RNNFAST_BACKEND", "auto"))


def cpu_native_wins(cell: str, training: bool, varlen: bool, batch: int, hidden_size: int, one_step: bool) -> bool:
    """Whether torch's native kernels beat rnnfast's scan on CPU for one call (the measurements are in
    this module's docstring). training: gradients will be needed (grad mode on and an input or weight
    requires grad); varlen: the batch has per-sequence lengths (PackedSequence or lengths=), which the
    native kernels run packed; one_step: a cell (LSTMCell, GRUCell, RNNCell). The dtype and LSTM
    projections did not change the outcome."""
    if one_step or not training:
        return True
    if cell == "lstm":
        return not varlen
    large = cell == "gru" and batch * hidden_size >= GRU_NATIVE_SIZE
    return large and (varlen or batch >= GRU_FIXED_NATIVE_BATCH)


def _checked_triton(device: torch.device, dtype: torch.dtype) -> str:
    """TRITON, or a RuntimeError saying why the kernels cannot run tensors of `dtype` on `device`."""
    problem = triton_problem()
    if problem is not None:
        raise RuntimeError(f"backend='triton' {problem}")
    if dtype not in TRITON_DTYPES:
        raise RuntimeError(f"backend='triton' supports float32, float16 and bfloat16, got {dtype}")
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before "
            "importing triton to run the kernels on CPU tensors through Triton's interpreter"
        )
    return TRITON


def choose_path(
    backend: str | None,
    device: torch.device,
    dtype: torch.dtype,
    *,
    cell: str,
    traced: bool = False,
    training: bool = False,
    varlen: bool = False,
    batch: int = 0,
    hidden_size: int = 0,
    one_step: bool = False,
) -> str:
    """NATIVE, SCAN or TRITON for a call of a `cell` ("lstm", "gru", "rnn_tanh", "rnn_relu") module on
    tensors on `device`, computed in `dtype` (autocast's where it is on). traced: `tracing(input)`; the
    other arguments feed the CPU rules (cpu_native_wins)."""
    requested = requested_backend(backend)
    if requested == TRITON:
        return _checked_triton(device, dtype)
    if requested == SCAN:
        return SCAN
    triton_runs = device.type == "cuda" and dtype in TRITON_DTYPES and triton_problem() is None
    # Traced calls may run only rnnfast's custom ops: torch's CPU LSTM, for one, has no fake implementation.
    if traced:
        return TRITON if triton_runs else SCAN
    if device.type == "cuda":
        return TRITON if triton_runs else NATIVE
    if device.type == "cpu" and cpu_native_wins(cell, training, varlen, batch, hidden_size, one_step):
        return NATIVE
    return SCAN
