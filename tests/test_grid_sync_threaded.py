"""The scans with their grid barrier on, through the public API, planned as on an H100
(RNNFAST_PLAN_TARGET=h100) and run by the threaded interpreter (tests/threaded.py): one launch per pass,
every program in its own thread, random yields between memory operations. Negative controls: the same
runs with the barrier removed from the kernels give wrong numbers; under the serial interpreter the
barrier times out into GridSyncTimeout and later scans run the one-step-per-launch fallback."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from triton.runtime.interpreter import InterpretedFunction

import rnnfast
from rnnfast.kernels import configs, launch, recurrence
from tests.oracle import LAYERS, SPECS, Case, assert_matches, compare_with_torch, make_inputs, make_pair
from tests.threaded import threaded_programs

CELLS = [spec.mode for spec in SPECS]
# Several hidden tiles forward and backward (H = 20: 5 LSTM/GRU programs forward, 2 backward).
CASE = Case(3, 4, 5, 20, bidirectional=True)


@pytest.fixture
def h100(monkeypatch):
    monkeypatch.setenv("RNNFAST_PLAN_TARGET", "h100")
    monkeypatch.delenv("RNNFAST_NO_GRID_SYNC", raising=False)
    monkeypatch.setattr(launch, "_timed_out_devices", set())
    launch._warn_timeout.cache_clear()  # each test sees the warning its timeout gives


@pytest.fixture
def launches(monkeypatch):
    """Counts interpreted kernel launches by kernel name."""
    counts = {}
    run = InterpretedFunction.run

    def counting(self, *args, **kwargs):
        counts[self.fn.__name__] = counts.get(self.fn.__name__, 0) + 1
        return run(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting)
    return counts


class _AsmCall:
    """What a builder's create_inline_asm returns: the call, whose get_result(i) is its output i."""

    def __init__(self, *results):
        self.results = results

    def get_result(self, index):
        return self.results[index]


def use_ptx_poll(monkeypatch) -> list:
    """The barrier's wait as compiled with a Triton before 3.9 (no tl.atomic_poll, as in torch 2.11's CUDA
    wheels): recurrence._POLL_ASM, inline PTX, which the interpreter cannot run. Here the interpreter runs
    what it does: wait until the counter reaches the count or the time budget is spent, by the installed
    interpreter's atomic_poll (threaded_programs' own inside it; the counters never pass the count a
    program waits for, so waiting for equality is the same), then return the counter's value. The PTX
    itself is checked by compiling it (tests/test_compile.py) and on a GPU. Returns the polls made."""
    polls = []
    monkeypatch.setattr(recurrence, "HAS_ATOMIC_POLL", tl.constexpr(False))

    def poll_asm(self, asm, constraints, values, types, is_pure, pack):
        assert (asm, constraints, is_pure, pack) == (recurrence._POLL_ASM.value, "=r,l,r,l", False, 1)
        counter, expected, timeout_ns = values
        polls.append(int(np.asarray(timeout_ns.data).item()))
        self.create_atomic_poll(counter, expected, timeout_ns, None, None)
        return _AsmCall(self.create_load(counter, None, True))

    builder_class = type(triton.runtime.interpreter.interpreter_builder)
    monkeypatch.setattr(builder_class, "create_inline_asm", poll_asm)
    return polls


@pytest.fixture(params=["atomic_poll", "ptx_poll"])
def barrier_wait(request, monkeypatch):
    """Each way the barrier waits: tl.atomic_poll (Triton 3.9 on), the PTX poll (older Tritons; the test
    must have run it)."""
    polls = use_ptx_poll(monkeypatch) if request.param == "ptx_poll" else None
    yield
    assert polls is None or polls, "the PTX poll never ran"


@pytest.fixture
def ptx_poll(monkeypatch):
    return use_ptx_poll(monkeypatch)


def pair(cell: str, case: Case, dtype=torch.float32):
    module_class, reference_class, options = LAYERS[cell]
    return make_pair(module_class, reference_class, case, dtype=dtype, backend="triton", **options)


@pytest.mark.parametrize("cell", CELLS)
def test_threaded_grid_sync_matches_torch_nn(cell, h100, barrier_wait, launches):
    plan = configs.plan_layer(cell, CASE.hidden_size, CASE.batch, torch.float32)
    assert plan.variant == "grid_sync" and plan.forward.programs > 1 and plan.backward.programs > 1
    torch.manual_seed(0)
    module, reference = pair(cell, CASE)
    x, hx = make_inputs(CASE, lstm=cell == "lstm")
    with threaded_programs(random_yields=0.2, seed=1):
        compare_with_torch(module, reference, x, hx)
    # One launch per layer and pass, running both directions (issue 11: bidirectional in one launch).
    assert configs.plan_scan(cell, CASE.hidden_size, CASE.batch, torch.float32, None, 2).directions == 2
    assert sorted(launches.values()) == [1, 1], launches


@pytest.mark.parametrize("cell", CELLS)
def test_directions_one_after_the_other_match_torch_nn(cell, h100, launches, monkeypatch):
    """Where the joint plan would lose W_hh's place on chip (configs.plan_scan), a bidirectional layer runs
    each direction in its own launch, the reverse one from direction_start = 1: forced here by planning
    one direction per launch, with the grid barrier, through the threaded interpreter."""
    monkeypatch.setattr(launch, "plan_scan", lambda *args: configs.plan_layer(*args[:5], directions=1))
    torch.manual_seed(3)
    module, reference = pair(cell, CASE)
    x, hx = make_inputs(CASE, lstm=cell == "lstm")
    with threaded_programs(random_yields=0.2, seed=4):
        compare_with_torch(module, reference, x, hx)
    # One launch per direction and pass.
    assert sorted(launches.values()) == [2, 2], launches


def test_threaded_grid_sync_packed_lengths_and_proj(h100):
    torch.manual_seed(1)
    reference = nn.LSTM(5, 20, num_layers=2, bidirectional=True, proj_size=6)
    module = rnnfast.LSTM(5, 20, num_layers=2, bidirectional=True, proj_size=6, backend="triton")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(5, 4, 5)
    packed = pack_padded_sequence(x, torch.tensor([5, 2, 4, 1]), enforce_sorted=False)
    with threaded_programs(random_yields=0.2, seed=2):
        out, (h_n, c_n) = module(packed)
        grads = torch.autograd.grad(out.data.sum() + c_n.sum(), list(module.parameters()))
    expected, (expected_h, expected_c) = reference(packed)
    expected_grads = torch.autograd.grad(expected.data.sum() + expected_c.sum(), list(reference.parameters()))
    assert_matches(out.data, expected.data, torch.float32, "packed output")
    assert_matches(h_n, expected_h, torch.float32, "h_n")
    assert_matches(c_n, expected_c, torch.float32, "c_n")
    for mine, theirs in zip(grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "parameter gradient")


def test_threaded_grid_sync_half_precision_and_batch_tiles(h100):
    case = Case(70, 3, 4, 12)  # two batch tiles of 64 rows
    plan = configs.plan_layer("gru", case.hidden_size, case.batch, torch.float16)
    assert plan.grid_sync and plan.forward.batch_tiles == 2
    torch.manual_seed(3)
    module, reference = pair("gru", case, torch.float16)
    x, hx = make_inputs(case, lstm=False)
    with threaded_programs(random_yields=0.1, seed=3):
        compare_with_torch(module, reference, x.half().float(), hx.half().float(), dtype=torch.float16)


def test_ptx_poll_times_out_then_falls_back(h100, ptx_poll, monkeypatch, launches):
    """The PTX poll of Tritons before 3.9 gives up when its time budget is spent: under the serial
    interpreter (where the other programs never arrive) the scan raises GridSyncTimeout, and later scans
    run the fallback."""
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "interpreter", 100_000)
    torch.manual_seed(5)
    case = Case(2, 3, 4, 20)
    module, reference = pair("gru", case)
    x, hx = make_inputs(case, lstm=False)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="timed out"):
        module(x, hx)
    assert ptx_poll[0] == 100_000 and 0 in ptx_poll  # after its timeout, a program polls with none left
    launches.clear()
    compare_with_torch(module, reference, x, hx)
    assert launches == {"_gru_fwd_kernel": case.seq_len, "_gru_bwd_kernel": case.seq_len}


@triton.jit
def _no_wait(barrier_ptr, step, timeout_ns):
    return tl.full((), 1, tl.int1)  # "every program arrived", without waiting for any


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_control_without_the_barrier_is_wrong(cell, h100, monkeypatch):
    """Negative control: the kernels with their grid barrier replaced by nothing race, and the comparison
    catches it (forward or backward). Run by the serial interpreter, every program runs its whole time
    loop before the next starts, the worst interleaving, so the race shows on every run; the threaded
    harness's own ability to catch a missing barrier under random yields is tests/test_threaded.py's."""
    monkeypatch.setattr(recurrence, "grid_wait", _no_wait)
    torch.manual_seed(0)
    case = Case(3, 6, 5, 20)
    module, reference = pair(cell, case)
    x, hx = make_inputs(case, lstm=cell == "lstm")
    with pytest.raises(AssertionError, match="max error"):
        compare_with_torch(module, reference, x, hx)


def test_threaded_control_serial_interpreter_times_out_then_falls_back(h100, monkeypatch, launches):
    """Under the stock (serial) interpreter a barrier can never complete: the scan raises GridSyncTimeout
    after the timeout, warns once, and later scans launch one kernel per step and are right."""
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "interpreter", 20_000_000)
    torch.manual_seed(5)
    case = Case(2, 3, 4, 20)
    module, reference = pair("lstm", case)
    x, hx = make_inputs(case)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="timed out"):
        module(x, hx)
    launches.clear()
    compare_with_torch(module, reference, x, hx)
    assert launches == {"_lstm_fwd_kernel": case.seq_len, "_lstm_bwd_kernel": case.seq_len}


def test_no_grid_sync_switch_plans_the_fallback(h100, monkeypatch, launches):
    monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    plan = configs.plan_layer("lstm", 20, 3, torch.float32)
    assert plan.variant == "step" and plan.launches_forward(7) == plan.launches_backward(7) == 7
    torch.manual_seed(6)
    case = Case(3, 4, 5, 20)
    module, reference = pair("lstm", case)
    compare_with_torch(module, reference, *make_inputs(case))
    assert launches == {"_lstm_fwd_kernel": case.seq_len, "_lstm_bwd_kernel": case.seq_len}


# K groups (configs: two programs per hidden tile, each holding half of the dot's K, adding up their products
# through L2 every step). Planned at small H by shrinking the H100's shared memory per block: with H = 20 and
# batch 3, (cell, shared bytes, pass whose slice no longer fits one program but fits two).
K_GROUP_CASES = [
    ("lstm", 3072, "forward"),
    ("lstm", 5120, "backward"),
    ("gru", 3072, "forward"),
    ("gru", 4096, "backward"),
    ("rnn_tanh", 3072, "both"),
    ("rnn_relu", 3072, "both"),
]


@pytest.fixture
def small_h100(h100, monkeypatch):
    """The H100 target with its shared memory per block set by the test (shrink(bytes))."""

    def shrink(shared_bytes: int) -> None:
        gpu = dataclasses.replace(configs.GPUS["h100"], shared_per_block=shared_bytes)
        monkeypatch.setitem(configs.GPUS, "h100", gpu)

    return shrink


def grouped_passes(plan) -> str:
    grouped = [name for name, p in (("forward", plan.forward), ("backward", plan.backward)) if p.k_groups > 1]
    return "both" if len(grouped) == 2 else "".join(grouped)


@pytest.mark.parametrize(("cell", "shared_bytes", "grouped"), K_GROUP_CASES)
def test_threaded_k_groups_match_torch_nn(cell, shared_bytes, grouped, small_h100, barrier_wait, launches):
    small_h100(shared_bytes)
    plan = configs.plan_scan(cell, CASE.hidden_size, CASE.batch, torch.float32, None, 2)
    assert plan.grid_sync and grouped_passes(plan) == grouped
    for pass_plan in (plan.forward, plan.backward):
        assert pass_plan.stationary or pass_plan.k_groups == 1
    # The fallback's plan never groups.
    fallback = configs.plan_scan(cell, CASE.hidden_size, CASE.batch, torch.float32, None, 2, grid_sync=False)
    assert fallback.forward.k_groups == fallback.backward.k_groups == 1
    torch.manual_seed(7)
    module, reference = pair(cell, CASE)
    x, hx = make_inputs(CASE, lstm=cell == "lstm")
    with threaded_programs(random_yields=0.2, seed=8):
        compare_with_torch(module, reference, x, hx)
    launches_per_pass = 2 // plan.directions
    assert sorted(launches.values()) == [launches_per_pass, launches_per_pass], launches


def test_threaded_k_groups_for_a_shorter_chain_match_torch_nn(h100, monkeypatch, launches):
    """The plans configs.GROUPED_MIN_MMA_CHAIN groups although they fit ungrouped (issue 26 item 3), made
    at H 128 by lowering the threshold to one MMA: two programs per tile, each half of K, against torch.nn
    (both directions of a bidirectional layer, forward and every gradient)."""
    # The LSTM backward at H 128: K = 512 split 4 ways (a chain of 16 MMAs in TF32), grouped 256 split 4 ways.
    cell, case = "lstm", dataclasses.replace(CASE, hidden_size=128)
    monkeypatch.setattr(configs, "GROUPED_MIN_MMA_CHAIN", 1)
    monkeypatch.setattr(configs, "_PLANS", {})
    plan = configs.plan_scan(cell, case.hidden_size, case.batch, torch.float32, None, 2)
    assert plan.grid_sync and plan.backward.k_groups == 2 and plan.backward.programs <= plan.gpu.sm_count
    monkeypatch.setattr(configs, "GROUPED_MIN_MMA_CHAIN", 10**6)
    monkeypatch.setattr(configs, "_PLANS", {})
    assert configs.plan_scan(cell, case.hidden_size, case.batch, torch.float32, None, 2).backward.k_groups == 1
    monkeypatch.setattr(configs, "GROUPED_MIN_MMA_CHAIN", 1)
    monkeypatch.setattr(configs, "_PLANS", {})
    torch.manual_seed(9)
    module, reference = pair(cell, case)
    x, hx = make_inputs(case, lstm=cell == "lstm")
    with threaded_programs(random_yields=0.2, seed=9):
        compare_with_torch(module, reference, x, hx)
    assert sorted(launches.values()) == [2 // plan.directions] * 2, launches


@triton.jit
def _own_part_only(part, exchange_ptr, barrier_ptr, s, failed, timeout, K_GROUPS: tl.constexpr):
    return part, failed, timeout  # this program's share of K, without its partner's


def test_control_k_groups_hold_half_of_k_each(small_h100, monkeypatch):
    """Negative control: with the K group's sum replaced by a program's own part, the grouped plan gives
    wrong numbers: each program of a group does hold only its share of W_hh."""
    small_h100(3072)
    monkeypatch.setattr(recurrence, "k_group_sum", _own_part_only)
    torch.manual_seed(7)
    module, reference = pair("rnn_tanh", CASE)
    x, hx = make_inputs(CASE, lstm=False)
    with threaded_programs(random_yields=0.0, seed=8), pytest.raises(AssertionError, match="max error"):
        compare_with_torch(module, reference, x, hx)


def test_k_group_wait_times_out_under_the_serial_interpreter(small_h100, monkeypatch):
    """A program waits for its partner's part: under the serial interpreter (the partner runs only after it),
    with the grid barrier itself made a no-op, that wait times out into GridSyncTimeout instead of reading a
    part that was never written."""
    small_h100(3072)
    monkeypatch.setattr(recurrence, "grid_wait", _no_wait)
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "interpreter", 20_000_000)
    torch.manual_seed(7)
    module, _ = pair("rnn_tanh", CASE)
    x, hx = make_inputs(CASE, lstm=False)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="timed out"):
        module(x, hx)


def test_single_step_scans_run_the_fallback_plan(small_h100, launches):
    """T = 1 has no barrier between steps: its scans run the fallback's plan, without K groups (whose
    programs must meet), under the serial interpreter, and match torch.nn."""
    small_h100(3072)
    plan = configs.plan_scan("rnn_tanh", CASE.hidden_size, CASE.batch, torch.float32, None, 2)
    assert plan.forward.k_groups == plan.backward.k_groups == 2
    torch.manual_seed(9)
    case = Case(3, 1, 5, 20, bidirectional=True)
    module, reference = pair("rnn_tanh", case)
    compare_with_torch(module, reference, *make_inputs(case, lstm=False))
    # The fallback's plan streams W_hh at this shared memory: each direction in its own launch.
    fallback = configs.plan_scan("rnn_tanh", CASE.hidden_size, CASE.batch, torch.float32, None, 2, grid_sync=False)
    assert fallback.directions == 1 and not fallback.forward.stationary
    assert launches == {"_rnn_fwd_kernel": 2, "_rnn_bwd_kernel": 2}


# Issue 26: the grid barriers' error flags are read without a device-to-host wait per launch.
STACK = Case(3, 4, 5, 20, num_layers=2, bidirectional=True)


@pytest.fixture
def flag_reads(monkeypatch):
    """Counts the reads of grid-barrier error flags (each a device-to-host wait on a GPU)."""
    reads = []
    read = launch.flag_is_set

    def counting(flag):
        reads.append(flag)
        return read(flag)

    monkeypatch.setattr(launch, "flag_is_set", counting)
    return reads


def one_read_per_scan(monkeypatch) -> None:
    """rnnfast/modules.py without its ops.error_flags_read_once around the layers: each layer's scan then
    reads its own flags when its forward ends."""
    monkeypatch.setattr(rnnfast.modules, "error_flags_read_once", lambda path, x: contextlib.nullcontext())


def forward_and_backward_reads(module, reference, reads: list) -> tuple[int, int]:
    """Runs STACK forward and backward through `module` (threaded) and `reference`, compares outputs and
    parameter gradients, and returns how many error flag reads the forward and the backward made."""
    x, hx = make_inputs(STACK)
    with threaded_programs(random_yields=0.1, seed=12):
        out, (h_n, c_n) = module(x, hx)
        forward_reads = len(reads)
        grads = torch.autograd.grad(out.sum() + c_n.sum(), list(module.parameters()))
    expected, (expected_h, expected_c) = reference(x, hx)
    expected_grads = torch.autograd.grad(expected.sum() + expected_c.sum(), list(reference.parameters()))
    assert_matches(out, expected, torch.float32, "output")
    assert_matches(h_n, expected_h, torch.float32, "h_n")
    for mine, theirs in zip(grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "parameter gradient")
    return forward_reads, len(reads) - forward_reads


@pytest.mark.parametrize("module_context", [False, True], ids=["per-layer", "module"])
@pytest.mark.parametrize("plan", ["joint", "direction-by-direction"])
def test_error_flags_are_read_once_per_backward(plan, module_context, h100, launches, flag_reads, monkeypatch):
    """A two-layer bidirectional LSTM reads its error flags once per layer forward (once per forward
    as the module runs them) and once per backward, whatever the launches: before issue 26 each launch was
    read right after it (2 + 2 here with both directions in one launch, 4 + 4 one direction at a time)."""
    if plan == "direction-by-direction":
        monkeypatch.setattr(launch, "plan_scan", lambda *args: configs.plan_layer(*args[:5], directions=1))
    torch.manual_seed(12)
    module, reference = pair("lstm", STACK)
    if not module_context:
        one_read_per_scan(monkeypatch)
    reads = forward_and_backward_reads(module, reference, flag_reads)
    assert reads == (1 if module_context else STACK.num_layers, 1)
    per_layer_and_pass = 1 if plan == "joint" else 2
    assert launches == {
        "_lstm_fwd_kernel": STACK.num_layers * per_layer_and_pass,
        "_lstm_bwd_kernel": STACK.num_layers * per_layer_and_pass,
    }


def test_module_forward_reads_its_error_flags_once(h100, flag_reads):
    """The module itself, nothing patched: rnnfast/modules.py's _scan_layers runs its layers inside
    ops.error_flags_read_once, so a forward waits for the device once, after queueing both layers."""
    torch.manual_seed(12)
    module, reference = pair("lstm", STACK)
    assert forward_and_backward_reads(module, reference, flag_reads) == (1, 1)


def test_backward_timeout_raises_from_backward_then_falls_back(h100, launches, flag_reads, monkeypatch):
    """A barrier of the backward times out (its scans run by the serial interpreter, the forward threaded):
    torch.autograd.grad raises GridSyncTimeout after reading the flags once, for both layers, warns, and
    later scans run the fallback and are right."""
    torch.manual_seed(13)
    module, reference = pair("lstm", STACK)
    x, hx = make_inputs(STACK)
    with threaded_programs(seed=13):
        out, _ = module(x, hx)
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "interpreter", 20_000_000)
    del flag_reads[:]
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="backward x2"):
        torch.autograd.grad(out.sum(), list(module.parameters()))
    assert len(flag_reads) == 1 and launch._backward_flags == {}
    launches.clear()
    compare_with_torch(module, reference, x, hx)
    assert launches == {"_lstm_fwd_kernel": 2 * STACK.seq_len, "_lstm_bwd_kernel": 2 * STACK.seq_len}


def test_error_flags_context_traces_without_a_graph_break():
    """ops.error_flags_read_once is nothing while torch.compile traces (the compiled graph's scans read
    their own flags when they run): a function using it compiles whole."""

    def layers(x):
        with rnnfast.ops.error_flags_read_once("triton", x):
            y = x * 2
        return y + 1

    x = torch.randn(3)
    compiled = torch.compile(layers, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), x * 2 + 1)
