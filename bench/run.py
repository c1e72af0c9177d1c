"""The benchmark loop: every case, provider and mode; prints the table as cases finish."""

import gc
import sys
import time
from collections.abc import Callable, Sequence

import torch

from .cases import Case, make_inputs
from .measure import cuda_peak_bytes, saved_tensor_bytes, time_cpu, time_cuda
from .providers import BASELINE, Provider, build_module, skip_reason


def mode_callable(module: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
    """One call of `mode`: inference under no_grad, forward building the graph, or forward and the
    gradients of the output (input and every parameter, nothing accumulated into .grad)."""
    if mode == "inference":

        def inference():
            with torch.no_grad():
                return module(x)

        return inference
    x = x.detach().requires_grad_()
    if mode == "forward":
        return lambda: module(x)
    inputs = [x, *module.parameters()]
    grad_output = torch.randn_like(module(x)[0])

    def forward_backward():
        output, _ = module(x)
        return torch.autograd.grad(output, inputs, grad_outputs=grad_output)

    return forward_backward


def _case_fields(case: Case) -> dict:
    return {
        "case": case.name, "cell": case.cell, "batch": case.batch, "seq_len": case.seq_len,
        "input_size": case.input_size, "hidden_size": case.hidden_size, "num_layers": case.num_layers,
        "bidirectional": case.bidirectional, "dtype": str(case.dtype).removeprefix("torch."),
        "sweeps": ";".join(sorted(case.sweeps)),
    }  # fmt: skip


def _empty_row(case: Case, provider: Provider, mode: str, status: str, reason: str = "") -> dict:
    return dict(
        **_case_fields(case), mode=mode, provider=provider.name, status=status, reason=reason, median_ms=None,
        p20_ms=None, p80_ms=None, samples=None, ratio=None, saved_bytes=None, saved_ratio=None, peak_bytes=None,
    )  # fmt: skip


def measure_provider(
    case: Case, provider: Provider, modes: Sequence[str], device: torch.device, min_run_time: float
) -> list[dict]:
    """Rows of one provider on one case: a single "all" row when it is skipped, else one per mode."""
    reason = skip_reason(provider, case, device)
    if reason is not None:
        return [_empty_row(case, provider, "all", "skipped", reason)]
    rows = []
    try:
        module = build_module(provider, case, device)
        x = make_inputs(case, device)
        saved = None
        if any(mode != "inference" for mode in modes):
            parameters = list(module.parameters())
            forward = mode_callable(module, x, "forward")
            saved = saved_tensor_bytes(forward, exclude=[x, *parameters])
        for mode in modes:
            fn = mode_callable(module, x, mode)
            row = _empty_row(case, provider, mode, "ok")
            timing = time_cuda(fn) if device.type == "cuda" else time_cpu(fn, min_run_time)
            row.update(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms, samples=timing.samples)
            if mode != "inference":
                row["saved_bytes"] = saved
            if device.type == "cuda":
                row["peak_bytes"] = cuda_peak_bytes(fn, device)
            rows.append(row)
    except (RuntimeError, NotImplementedError, ValueError) as error:
        # A provider that fails on one case (out of memory, an unsupported option) must not stop the grid;
        # the row records it and the run exits non-zero.
        done = {row["mode"] for row in rows}
        rows += [_empty_row(case, provider, mode, "error", f"{type(error).__name__}: {error}".splitlines()[0])
                 for mode in modes if mode not in done]  # fmt: skip
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Time and saved-memory ratios of every row to torch.nn's row of the same case and mode."""
    baseline = {
        (row["case"], row["mode"]): row for row in rows if row["provider"] == BASELINE and row["status"] == "ok"
    }
    for row in rows:
        base = baseline.get((row["case"], row["mode"]))
        if base is None or row["status"] != "ok" or row["provider"] == BASELINE:
            continue
        row["ratio"] = row["median_ms"] / base["median_ms"]
        if row["saved_bytes"] is not None and base["saved_bytes"]:
            row["saved_ratio"] = row["saved_bytes"] / base["saved_bytes"]


def run_grid(
    cases: Sequence[Case],
    providers: Sequence[Provider],
    modes: Sequence[str],
    device: torch.device,
    min_run_time: float,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[dict]:
    """Measures every case (a progress line each); returns the rows with their ratios filled in."""
    rows: list[dict] = []
    for index, case in enumerate(cases, 1):
        start = time.perf_counter()
        case_rows = []
        for provider in providers:
            case_rows += measure_provider(case, provider, modes, device, min_run_time)
        add_ratios(case_rows)
        rows += case_rows
        progress(f"[{index}/{len(cases)}] {case.name} ({time.perf_counter() - start:.1f} s)")
    return rows
