"""The benchmark loop: every case, provider and mode; prints the table as cases finish."""

import gc
import sys
import time
from collections.abc import Callable, Sequence

import torch

from .cases import DTYPE_NAMES, Case, make_inputs
from .measure import Timing, cuda_peak_bytes, saved_tensor_bytes, time_cpu, time_cuda
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
        model_ms=None,
    )  # fmt: skip


def time_cuda_each(fns: dict[str, Callable[[], object]]) -> dict[str, Timing]:
    """do_bench one provider after another (CUDA timings are not disturbed by other processes' CPU load)."""
    return {name: time_cuda(fn) for name, fn in fns.items()}


def _error_rows(case: Case, provider: Provider, modes: Sequence[str], error: Exception) -> list[dict]:
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    return [_empty_row(case, provider, mode, "error", reason) for mode in modes]


def measure_case(
    case: Case, providers: Sequence[Provider], modes: Sequence[str], device: torch.device, min_run_time: float
) -> list[dict]:
    """Rows of every provider on one case: a single "all" row for a provider that is skipped, else one per
    mode. A provider that fails (out of memory, an unsupported option) gets "error" rows, and the grid goes
    on; the command exits non-zero."""
    rows = []
    prepared = {}
    for provider in providers:
        reason = skip_reason(provider, case, device)
        if reason is not None:
            rows.append(_empty_row(case, provider, "all", "skipped", reason))
            continue
        try:
            module = build_module(provider, case, device)
            x = make_inputs(case, device)
            saved = None
            if any(mode != "inference" for mode in modes):
                saved = saved_tensor_bytes(mode_callable(module, x, "forward"), exclude=[x, *module.parameters()])
            prepared[provider.name] = (provider, module, x, saved)
        except (RuntimeError, ValueError) as error:
            rows += _error_rows(case, provider, modes, error)
    for mode in modes:
        fns = {name: mode_callable(module, x, mode) for name, (_, module, x, _) in prepared.items()}
        try:
            timings = time_cuda_each(fns) if device.type == "cuda" else time_cpu(fns, min_run_time)
        except (RuntimeError, ValueError) as error:
            for provider, _, _, _ in prepared.values():
                rows += _error_rows(case, provider, [mode], error)
            continue
        for name, timing in timings.items():
            provider, _, _, saved = prepared[name]
            row = _empty_row(case, provider, mode, "ok")
            row.update(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms, samples=timing.samples)
            if mode != "inference":
                row["saved_bytes"] = saved
            if device.type == "cuda":
                row["peak_bytes"] = cuda_peak_bytes(fns[name], device)
            rows.append(row)
    prepared.clear()  # the modules and inputs go before the next case allocates its own
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    order = {provider.name: index for index, provider in enumerate(providers)}
    rows.sort(key=lambda row: order[row["provider"]])
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
    time_budget: float | None = None,
    case_done: Callable[[list[dict]], None] = lambda rows: None,
) -> list[dict]:
    """Measures every case in order (a progress line each, and case_done(rows so far) after each); returns
    the rows with their ratios filled in. Once time_budget seconds have passed no case is started: the
    rest get "skipped" rows."""
    rows: list[dict] = []
    started = time.perf_counter()
    for index, case in enumerate(cases, 1):
        start = time.perf_counter()
        if time_budget is not None and start - started >= time_budget:
            reason = f"time budget of {time_budget:g} s spent"
            rows += [_empty_row(case, provider, "all", "skipped", reason) for provider in providers]
            continue
        case_rows = measure_case(case, providers, modes, device, min_run_time)
        add_ratios(case_rows)
        rows += case_rows
        progress(f"[{index}/{len(cases)}] {case.name} ({time.perf_counter() - start:.1f} s)")
        case_done(rows)
    return rows


# Providers whose CUDA rows run rnnfast's Triton kernels, which the latency model describes.
MODELLED_PROVIDERS = ("rnnfast", "rnnfast-triton")


def model_gpu(device: torch.device) -> str | None:
    """The GPU of bench/model.py a CUDA device is modelled as: "h100" from sm_90 on (an H200 has the same
    SMs), "a100" for sm_80-sm_89; None for a CPU or older GPUs."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return "h100" if major >= 9 else "a100" if major == 8 else None


def add_model(rows: list[dict], gpu: str) -> None:
    """model_ms (bench/model.py: a MODEL, not a measurement) on the measured rows it describes: rnnfast's
    kernels on one-layer, fixed-length cases with input size = hidden size; inference and forward take
    the model's forward."""
    from .report import model_layer_ms

    for row in rows:
        if (
            row["status"] != "ok" or row["provider"] not in MODELLED_PROVIDERS or row["num_layers"] != 1
            or row["input_size"] != row["hidden_size"] or "varlen" in row["case"].split("-")
        ):  # fmt: skip
            continue
        dtype = DTYPE_NAMES[getattr(torch, row["dtype"])]
        directions = 2 if row["bidirectional"] else 1
        forward, total = model_layer_ms(
            row["cell"], row["hidden_size"], row["batch"], dtype, row["seq_len"], gpu, directions
        )
        row["model_ms"] = total if row["mode"] == "forward+backward" else forward
