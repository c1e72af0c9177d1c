"""Time and memory of one callable: medians with quantiles, bytes saved for backward, CUDA peak memory;
and the start-up cost of a layer's first call in a fresh process."""

import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import benchmark

QUANTILES = (0.5, 0.2, 0.8)
# Below this many timed runs a p20/p80 says little: slow statements get a longer measuring window.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int | None  # timed runs (None where do_bench does not say)


def time_cpu(fns: dict[str, Callable[[], object]], min_run_time: float) -> dict[str, Timing]:
    """torch.utils.benchmark's blocked_autorange with torch's own thread count (Timer defaults to one), in
    MIN_SAMPLES rounds that take turns between the callables: on a shared machine, load that comes and goes
    then lands on every provider alike instead of on whichever ran during it."""
    timers = {
        name: benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        for name, fn in fns.items()
    }
    for fn in fns.values():
        fn()  # warm-up (blocked_autorange also warms up while sizing its blocks)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(MIN_SAMPLES):
        for name, timer in timers.items():
            samples[name] += timer.blocked_autorange(min_run_time=min_run_time / MIN_SAMPLES).times
    timings = {}
    for name, times in samples.items():
        quantiles = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor(QUANTILES, dtype=torch.float64))
        median, p20, p80 = (seconds * 1e3 for seconds in quantiles.tolist())
        timings[name] = Timing(median, p20, p80, len(times))
    return timings


def time_cuda(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> Timing:
    """triton.testing.do_bench: warm-up, L2 flush between runs, CUDA-event timings."""
    from triton.testing import do_bench

    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return Timing(median, p20, p80, None)


def _storage_key(tensor: torch.Tensor) -> tuple:
    storage = tensor.untyped_storage()
    return tensor.device, storage.data_ptr(), storage.nbytes()


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn` runs, leaving out the storages
    of `exclude` (inputs and parameters, which exist with or without autograd). Views of one storage count
    once, at the storage's full size."""
    excluded = {_storage_key(tensor) for tensor in exclude}
    saved: set[tuple] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            saved.add(key)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(nbytes for _, _, nbytes in saved)


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated on `device` while `fn` runs, above what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# A layer's first CPU call in a fresh process, after `import torch` (which both pay alike): rnnfast's line
# includes `import rnnfast`. Prints seconds and the growth of the process's peak resident memory in MB.
FIRST_CALL = """
import resource, time, torch
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
{build}
layer(torch.randn(5, 2, 8))
print(time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024)
"""
FIRST_CALL_BUILDS = {
    "torch.nn": "from torch import nn; layer = nn.LSTM(8, 16)",
    "rnnfast": "import rnnfast; layer = rnnfast.LSTM(8, 16)",
}


def first_call(provider: str, runs: int = 3) -> tuple[float, float]:
    """(seconds, MB) of import + construction + first forward of an LSTM, median over fresh processes."""
    code = FIRST_CALL.format(build=FIRST_CALL_BUILDS[provider])
    repo = Path(__file__).resolve().parent.parent  # the rnnfast this bench measures
    samples = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
        samples.append(tuple(float(value) for value in done.stdout.split()))
    return statistics.median(s for s, _ in samples), statistics.median(mb for _, mb in samples)
