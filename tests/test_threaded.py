"""tests/threaded.py: interpreted programs that wait for each other, run one thread per program.

The kernel here is a diffusion over a ring of programs: every round each program publishes its values,
meets the others at a grid barrier, and mixes in its two neighbours' published values. Its answer needs
every program's round-r values before any program reads them, so it is right only if the barrier works
(and the harness runs the programs at the same time), and wrong when the barrier is left out.
"""

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter

from tests.oracle import TOLERANCE, assert_matches
from tests.threaded import ThreadedDeadlockError, threaded_programs


@triton.jit
def _grid_barrier(counters_ptr, step, timeout_ns):
    """Every program of the grid meets here; returns whether all of them arrived within timeout_ns."""
    tl.debug_barrier()
    counter = counters_ptr + step % 2  # two counters on alternate steps make equality polling safe
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    expected = (step // 2 + 1) * tl.num_programs(0)
    arrived = tl.atomic_poll(counter, expected, sem="acquire", scope="gpu", timeout_ns=timeout_ns)
    tl.debug_barrier()
    return arrived


@triton.jit
def _diffuse_kernel(
    x_ptr,  # [P, BLOCK] fp32 values of each program, overwritten with the result
    history_ptr,  # [rounds, P, BLOCK] fp32 what each program published in each round
    counters_ptr,  # int32 [2] barrier counters, zero at launch
    error_ptr,  # int32 [1] set to 1 by a program whose barrier timed out
    rounds,
    BLOCK: tl.constexpr,
    USE_BARRIER: tl.constexpr,
    TIMEOUT_NS: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    left = (pid + programs - 1) % programs
    right = (pid + 1) % programs
    x = tl.load(x_ptr + pid * BLOCK + offs)
    failed = 0
    for r in range(rounds):
        published = history_ptr + r * programs * BLOCK
        tl.store(published + pid * BLOCK + offs, x)
        if USE_BARRIER:
            arrived = _grid_barrier(counters_ptr, r, TIMEOUT_NS)
            failed = tl.where(arrived, failed, 1)
        neighbours = tl.load(published + left * BLOCK + offs) + tl.load(published + right * BLOCK + offs)
        x = 0.5 * x + 0.25 * neighbours
    tl.store(x_ptr + pid * BLOCK + offs, x)
    if failed != 0:
        tl.atomic_xchg(error_ptr, 1)


BLOCK = 4


def diffuse(x: torch.Tensor, rounds: int, barrier: bool = True, timeout_ns=None, counters=None) -> torch.Tensor:
    """x [P, BLOCK] -> x after `rounds` rounds, in one launch of P programs."""
    x = x.clone()
    history = torch.empty(rounds, *x.shape)  # NaN-filled by conftest: a read before the write shows
    counters = torch.zeros(2, dtype=torch.int32) if counters is None else counters
    error = torch.zeros(1, dtype=torch.int32)
    _diffuse_kernel[(x.shape[0],)](
        x, history, counters, error, rounds, BLOCK=BLOCK, USE_BARRIER=barrier, TIMEOUT_NS=timeout_ns
    )
    if error.item():
        raise RuntimeError("grid barrier timed out: the programs of the launch were not all running")
    return x


def diffuse_oracle(x: torch.Tensor, rounds: int) -> torch.Tensor:
    x = x.double()
    for _ in range(rounds):
        x = 0.5 * x + 0.25 * (x.roll(1, 0) + x.roll(-1, 0))
    return x


@pytest.mark.parametrize("random_yields", [0.0, 0.3])
@pytest.mark.parametrize("programs", [1, 5, 16])
def test_threaded_barrier_exchange_is_right(programs, random_yields):
    x = torch.randn(programs, BLOCK)
    with threaded_programs(random_yields=random_yields, seed=programs):
        y = diffuse(x, rounds=6)
    assert_matches(y, diffuse_oracle(x, 6), torch.float32, "diffused values")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threaded_catches_a_missing_barrier(seed):
    x = torch.randn(8, BLOCK)
    with threaded_programs(random_yields=0.3, seed=seed):
        y = diffuse(x, rounds=6, barrier=False)
    expected = diffuse_oracle(x, 6)
    error = (y.double() - expected).abs().max().item()  # NaN where a program read an unwritten slot
    assert not error <= TOLERANCE[torch.float32], f"a race went unnoticed (max error {error:.3g})"


def test_threaded_stale_counters_time_out_into_an_error():
    """Counters not reset before a launch: no count ever equals the expected one. With a timeout the
    kernel's error flag reports it."""
    x = torch.randn(4, BLOCK)
    with threaded_programs(), pytest.raises(RuntimeError, match="grid barrier timed out"):
        diffuse(x, rounds=2, timeout_ns=20_000_000, counters=torch.full((2,), 3, dtype=torch.int32))


def test_threaded_deadlock_without_timeout_is_an_error():
    """The same bug with no timeout would hang a GPU: the harness reports it instead."""
    x = torch.randn(4, BLOCK)
    with threaded_programs(), pytest.raises(ThreadedDeadlockError, match="without a timeout"):
        diffuse(x, rounds=2, counters=torch.full((2,), 3, dtype=torch.int32))


def test_threaded_control_serial_interpreter_barrier_times_out_instead_of_hanging():
    """Negative control: the stock interpreter runs program 0 to the end before program 1 starts, so the
    barrier cannot complete; its timeout turns that into the kernel's error flag, not a hang."""
    x = torch.randn(3, BLOCK)
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        diffuse(x, rounds=2, timeout_ns=20_000_000)


@triton.jit
def _program_ids_kernel(out_ptr):  # [X, Y, Z, 3] int32
    x, y, z = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row = out_ptr + ((x * tl.num_programs(1) + y) * tl.num_programs(2) + z) * 3
    tl.store(row, x)
    tl.store(row + 1, y)
    tl.store(row + 2, z)


def program_ids(grid):
    out = torch.full((*grid, 3), -1, dtype=torch.int32)
    _program_ids_kernel[grid](out)
    return out


def test_threaded_program_ids_per_thread_and_restored_after():
    grid = (3, 2, 2)
    expected = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), dim=-1).int()
    with threaded_programs(random_yields=0.5):
        assert torch.equal(program_ids(grid), expected)
    assert torch.equal(program_ids(grid), expected)  # the stock interpreter again
    assert "grid_idx" not in type(interpreter.interpreter_builder).__dict__


@triton.jit
def _failing_kernel(out_ptr, counters_ptr):
    tl.assume(tl.program_id(0) != 1)  # the interpreter checks assumptions: program 1 fails here
    tl.store(out_ptr + tl.program_id(0), 1.0)
    _grid_barrier(counters_ptr, 0, None)  # the others wait for program 1 forever


def test_threaded_kernel_error_names_the_program():
    """The failing program is reported, not the deadlock it leaves behind."""
    out = torch.zeros(3)
    with (
        threaded_programs(),
        pytest.raises(RuntimeError, match=r"program \(1, 0, 0\) of grid \(3, 1, 1\).*Assume failed") as raised,
    ):
        _failing_kernel[(3,)](out, torch.zeros(2, dtype=torch.int32))
    assert not isinstance(raised.value, ThreadedDeadlockError)
    assert out.tolist() == [1.0, 0.0, 1.0]  # the other programs ran


def test_threaded_refuses_other_interpreter_internals(monkeypatch):
    builder_class = type(interpreter.interpreter_builder)
    monkeypatch.setattr(builder_class, "create_atomic_poll", lambda self, ptr, expected, sem, scope: None)
    with pytest.raises(RuntimeError, match="create_atomic_poll has parameters"), threaded_programs():
        pass


def test_threaded_refuses_an_executor_that_does_not_run_each_program(monkeypatch):
    monkeypatch.setattr(interpreter.GridExecutor, "__call__", lambda self, *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="needs updating"), threaded_programs():
        program_ids((2, 1, 1))


def test_threaded_nested_use_is_refused():
    with threaded_programs(), pytest.raises(RuntimeError, match="nested use"), threaded_programs():
        pass
