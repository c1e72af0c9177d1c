"""The Triton kernels compiled for a real GPU against torch.nn (cuDNN) on the same device.

Runs where CUDA is available and Triton's interpreter is off:
    TRITON_INTERPRET=0 python -m pytest -q tests/test_cuda.py
Elsewhere the module is skipped: the interpreter runs of the other test files cover the same kernels on
CPU. RNNFAST_TEST_DEVICE=cpu runs these checks through the interpreter instead (a check of the checks).
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rnnfast.kernels import configs, launch
from tests import oracle
from tests.oracle import LAYERS, Case, assert_matches, compare_with_torch, make_inputs
from tests.test_activations import assert_within_2_ulp_everywhere

DEVICE = torch.device(os.environ.get("RNNFAST_TEST_DEVICE", "cuda"))
if DEVICE.type == "cuda" and (not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
    pytest.skip("needs a CUDA device with TRITON_INTERPRET=0", allow_module_level=True)

# Every layer kind of tests/oracle.py's table; the planner's cell is its mode (lstm-proj: lstm).
CELLS = list(LAYERS)
# One K piece of the weight slice, several (300 = 256 + 32 + 16), and issue 11's H 768 (512 + 256), whose
# dots split K across warps (configs K_SPLIT).
HIDDEN_SIZES = [24, 300, 768]
cuda_only = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA device behaviour")


@pytest.fixture(autouse=True)
def ieee_fp32(monkeypatch):
    """fp32 compared in IEEE on both sides: cuDNN's RNNs and rnnfast's kernels both use TF32 while
    torch.backends.cudnn.allow_tf32 is on (test_tf32_follows_cudnn checks that setting)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture
def fresh_grid_sync(monkeypatch):
    monkeypatch.delenv("RNNFAST_NO_GRID_SYNC", raising=False)
    monkeypatch.setattr(launch, "_timed_out_devices", set())
    launch._warn_timeout.cache_clear()  # each test sees the warning its timeout gives


def plan_cell(layer: str) -> str:
    return layer.removesuffix("-proj")


def make_pair(cell: str, hidden: int, dtype: torch.dtype, batch_first: bool = False):
    """oracle.make_pair's two-layer bidirectional pair (input size 16) on the device."""
    module_class, reference_class, options = LAYERS[cell]
    case = Case(1, 1, 16, hidden, num_layers=2, bidirectional=True, batch_first=batch_first)
    module, reference = oracle.make_pair(module_class, reference_class, case, dtype, backend="triton", **options)
    return module.to(DEVICE), reference.to(DEVICE)


@pytest.mark.parametrize("function", ["exp", "sigmoid", "tanh"])
def test_activations_on_the_device_within_2_ulp_everywhere(function):
    """The device computes the kernels' activations as the interpreter does (no contraction but their own
    fused multiply-adds), so they keep the accuracy tests/test_activations.py measures there."""
    assert_within_2_ulp_everywhere(function, DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_on_the_device_match_torch_nn(cell, hidden, dtype, fresh_grid_sync):
    if DEVICE.type == "cuda":  # these shapes run the grid barrier (one launch per pass) on any recent GPU
        assert configs.plan_layer(plan_cell(cell), hidden, 19, dtype, DEVICE).grid_sync
    torch.manual_seed(0)
    module, reference = make_pair(cell, hidden, dtype, batch_first=True)
    case = Case(19, 9, 16, hidden, num_layers=2, bidirectional=True, batch_first=True, with_hx=False)
    x, _ = make_inputs(case)
    # relu's derivative jumps at 0: a unit whose pre-activation rounds to the other side in 16 bits flips its
    # whole gradient path, so against an fp32 oracle only the forward is well-posed there.
    gradients = not (cell == "rnn_relu" and dtype != torch.float32)
    compare_with_torch(module, reference, x.to(DEVICE).to(dtype).float(), dtype=dtype, gradients=gradients)


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("cell", CELLS)
def test_variable_lengths_on_the_device_match_packed_torch_nn(cell, hidden):
    torch.manual_seed(1)
    module, reference = make_pair(cell, hidden, torch.float32)
    lengths = torch.tensor([9, 1, 5, 9, 3])
    x = torch.randn(9, 5, 16, device=DEVICE)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    output, final = module(packed)
    expected, expected_final = reference(packed)
    assert_matches(output.data, expected.data, torch.float32, "packed output")
    finals = final if isinstance(final, tuple) else (final,)
    expected_finals = expected_final if isinstance(expected_final, tuple) else (expected_final,)
    for mine, theirs in zip(finals, expected_finals):
        assert_matches(mine, theirs, torch.float32, "final state")
    grads = torch.autograd.grad(output.data.sum(), list(module.parameters()))
    expected_grads = torch.autograd.grad(expected.data.sum(), list(reference.parameters()))
    for mine, theirs in zip(grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "parameter gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_fallback_one_launch_per_step_matches_torch_nn(cell, dtype, monkeypatch):
    monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    assert configs.plan_layer(plan_cell(cell), 300, 19, dtype, DEVICE).variant == "step"
    torch.manual_seed(3)
    module, reference = make_pair(cell, 300, dtype, batch_first=True)
    case = Case(19, 9, 16, 300, num_layers=2, bidirectional=True, batch_first=True, with_hx=False)
    x, _ = make_inputs(case)
    gradients = not (cell == "rnn_relu" and dtype != torch.float32)
    compare_with_torch(module, reference, x.to(DEVICE).to(dtype).float(), dtype=dtype, gradients=gradients)


@cuda_only
def test_fallback_replays_its_step_loop_as_a_cuda_graph(monkeypatch):
    """The fallback's step loop is captured once per set of arguments and replayed: the same call again
    replays the kept graph (no new capture) and still matches torch.nn."""
    monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    monkeypatch.setattr(launch, "_step_graphs", {})
    captures = []
    begin = torch.cuda.CUDAGraph.capture_begin
    monkeypatch.setattr(
        torch.cuda.CUDAGraph, "capture_begin", lambda self, *a, **k: captures.append(1) or begin(self, *a, **k)
    )
    torch.manual_seed(9)
    module, reference = make_pair("gru", 64, torch.float32)
    x = torch.randn(12, 5, 16, device=DEVICE)
    expected = reference(x)[0]
    with torch.no_grad():
        assert_matches(module(x)[0], expected, torch.float32, "output, first (captured) call")
        captured = len(captures)
        # The same allocations again (the caching allocator hands back the blocks just freed).
        assert_matches(module(x)[0], expected, torch.float32, "output, replayed call")
    assert len(captures) == captured == len(launch._step_graphs) > 0


@cuda_only
def test_grid_sync_timeout_raises_warns_then_falls_back(fresh_grid_sync, monkeypatch):
    """A zero timeout makes the barrier's polls give up unless every program has already arrived: the
    scan raises GridSyncTimeout and warns, and later scans on the device run the fallback, correctly."""
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "gpu", 0)
    torch.manual_seed(4)
    module, reference = make_pair("lstm", 256, torch.float32)
    x = torch.randn(256, 16, 16, device=DEVICE)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout):
        module(x)
    assert launch._timed_out_devices == {str(module.weight_hh_l0.device)}
    compare_with_torch(module, reference, x)


# A process in which Triton has no tl.atomic_poll (as before 3.9), so that the barrier waits in
# recurrence._POLL_ASM: a 2-layer bidirectional LSTM and GRU with the grid barrier against cuDNN.
PTX_POLL_RUN = """
import sys, torch, triton.language as tl
del tl.atomic_poll
from rnnfast.kernels import configs, recurrence
assert not recurrence.HAS_ATOMIC_POLL.value
from tests.oracle import Case, compare_with_torch, make_inputs
from tests.test_cuda import DEVICE, make_pair
torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
for cell in ("lstm", "gru"):
    assert configs.plan_layer(cell, 300, 19, torch.float32, DEVICE).grid_sync
    torch.manual_seed(0)
    module, reference = make_pair(cell, 300, torch.float32)
    x, _ = make_inputs(Case(19, 9, 16, 300, num_layers=2, bidirectional=True, with_hx=False))
    compare_with_torch(module, reference, x.to(DEVICE))
print("ok")
"""


@cuda_only
def test_ptx_poll_of_tritons_before_3_9_on_the_device():
    """The barrier's wait as Tritons before 3.9 compile it (inline PTX, recurrence._POLL_ASM), run on the
    device: Triton is this one, without tl.atomic_poll, in another process."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "RNNFAST_NO_GRID_SYNC": "0"}
    run = subprocess.run(
        [sys.executable, "-c", PTX_POLL_RUN], cwd=Path(__file__).resolve().parent.parent, env=env,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


@cuda_only
def test_error_flags_read_once_per_forward_and_once_per_backward(fresh_grid_sync, monkeypatch):
    """Issue 26: a two-layer bidirectional LSTM waits for the device once per forward (reading its
    barriers' error flag, after both layers are queued) and once per backward, not after every launch;
    a backward whose barrier times out (a zero timeout set after the forward) raises GridSyncTimeout
    from torch.autograd.grad itself, and later scans run the fallback, correctly."""
    reads = []
    read = launch.flag_is_set
    monkeypatch.setattr(launch, "flag_is_set", lambda flag: reads.append(flag) or read(flag))
    torch.manual_seed(12)
    module, reference = make_pair("lstm", 256, torch.float32)
    x = torch.randn(256, 16, 16, device=DEVICE)
    out, _ = module(x)
    assert len(reads) == 1
    torch.autograd.grad(out.sum(), list(module.parameters()))
    assert len(reads) == 2
    out, _ = module(x)
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "gpu", 0)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="backward"):
        torch.autograd.grad(out.sum(), list(module.parameters()))
    assert len(reads) == 4 and launch._backward_flags == {}
    compare_with_torch(module, reference, x)


@cuda_only
@pytest.mark.parametrize("grid_sync", [True, False], ids=["grid_sync", "step"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_cuda_graph_capture_and_replay(cell, grid_sync, fresh_grid_sync, monkeypatch):
    """Both variants are capturable: no host sync inside a scan while a graph is captured, and the
    barrier counters are zeroed by memset nodes of the graph on every replay."""
    if not grid_sync:
        monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    torch.manual_seed(5)
    module, reference = make_pair(cell, 128, torch.float32)
    static_x = torch.randn(32, 8, 16, device=DEVICE)
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            module(static_x)  # warm-up: compiles outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out, _ = module(static_x)
        for seed in (6, 7):
            torch.manual_seed(seed)
            x = torch.randn_like(static_x)
            static_x.copy_(x)
            graph.replay()
            assert_matches(static_out, reference(x)[0], torch.float32, f"replayed output (seed {seed})")


@cuda_only
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_k_groups_on_the_device_match_torch_nn(cell, fresh_grid_sync, monkeypatch):
    """K groups (two programs per hidden tile, each holding half of the dot's K, their partial products
    added through L2 every step), planned at H 300 by lowering the device's shared memory per block until
    a pass needs them: forward and backward against cuDNN, both directions of two layers."""
    device_gpu = configs.target_gpu(DEVICE)
    for shared_bytes in range(device_gpu.shared_per_block, 4096, -1024):
        gpu = dataclasses.replace(device_gpu, shared_per_block=shared_bytes)
        monkeypatch.setattr(configs, "target_gpu", lambda device=None, gpu=gpu: gpu)
        plan = configs.plan_layer(cell, 300, 19, torch.float32, DEVICE)
        if plan.grid_sync and max(plan.forward.k_groups, plan.backward.k_groups) > 1:
            break
    else:
        pytest.fail(f"no shared memory limit makes the {cell} plan group K")
    torch.manual_seed(10)
    module, reference = make_pair(cell, 300, torch.float32, batch_first=True)
    case = Case(19, 9, 16, 300, num_layers=2, bidirectional=True, batch_first=True, with_hx=False)
    x, _ = make_inputs(case)
    compare_with_torch(module, reference, x.to(DEVICE))


@cuda_only
def test_k_groups_of_the_lstm_backward_at_h1024(fresh_grid_sync):
    """The fp32 LSTM backward at H 1024: 16 units' slice (K = 4H) is 262,144 B, past any block's shared
    memory; on a GPU with 128 SMs or more it runs in K groups, on others it streams. Against cuDNN."""
    plan = configs.plan_layer("lstm", 1024, 16, torch.float32, DEVICE)
    assert plan.weight_bytes_per_step == 0 or plan.gpu.sm_count < 128, plan
    torch.manual_seed(11)
    module_class, reference_class, options = LAYERS["lstm"]
    case = Case(16, 33, 16, 1024)
    module, reference = oracle.make_pair(module_class, reference_class, case, torch.float32, backend="triton")
    x, hx = make_inputs(case)
    compare_with_torch(module.to(DEVICE), reference.to(DEVICE), x.to(DEVICE), tuple(h.to(DEVICE) for h in hx))


@cuda_only
def test_tf32_follows_cudnn(monkeypatch):
    """With torch.backends.cudnn.allow_tf32 on (torch's default) fp32 dots use TF32, as cuDNN's RNNs do;
    TF32 keeps fp16's 10-bit mantissa, so fp16's tolerance applies."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert launch.dot_precision(torch.float32) == "tf32"
    torch.manual_seed(8)
    module, reference = make_pair("lstm", 256, torch.float32)
    x = torch.randn(20, 16, 16, device=DEVICE)
    assert_matches(module(x)[0], reference(x)[0], torch.float16, "TF32 output")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert launch.dot_precision(torch.float32) == "ieee"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_long_sequence_one_launch(cell, fresh_grid_sync):
    """4096 steps in one launch per pass: every step must see the h_{t-1} (and, backward, the gate
    gradients) every other program wrote."""
    steps = 4096 if DEVICE.type == "cuda" else 64
    torch.manual_seed(2)
    module, reference = make_pair(cell, 128, torch.float32)
    x = torch.randn(steps, 3, 16, device=DEVICE)
    compare_with_torch(module, reference, x)


@cuda_only
@pytest.mark.parametrize("old_triton", [False, True], ids=["float64", "triton-3.4"])
def test_auto_runs_torchs_own_kernels_where_triton_cannot(old_triton, monkeypatch):
    """backend "auto" on CUDA runs torch's own kernels (cuDNN) for float64, and for every dtype under a Triton
    older than the kernels support: torch.nn's numbers, no Triton launch."""
    from rnnfast import dispatch
    from rnnfast.kernels import lstm

    if old_triton:
        monkeypatch.setattr(dispatch, "installed_triton_version", lambda: (3, 4))
    monkeypatch.setattr(lstm, "run_scan", lambda *args, **kwargs: pytest.fail("a Triton scan was launched"))
    dtype = torch.float32 if old_triton else torch.float64
    torch.manual_seed(0)
    case = Case(5, 7, 16, 24, num_layers=2, bidirectional=True)
    module, reference = oracle.make_pair(*LAYERS["lstm"][:2], case, dtype, backend="auto")
    module, reference = module.to(DEVICE, dtype), reference.to(DEVICE, dtype)
    x, hx = make_inputs(case)
    compare_with_torch(module, reference, x.to(DEVICE, dtype), tuple(h.to(DEVICE, dtype) for h in hx), dtype=dtype)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("hidden, num_layers", [(24, 3), (128, 2), (768, 2)])
def test_wavefront_stacks_on_the_device_match_torch_nn(cell, hidden, num_layers, dtype, fresh_grid_sync, monkeypatch):
    """Unidirectional stacks as one wavefront launch per pass (rnnfast/wavefront.py) where the plan allows
    it (H 768 fp16: W_ih on chip, in the backward too on an H100; H 128), against cuDNN, every gradient."""
    from rnnfast import wavefront

    runs = []
    apply = wavefront._WavefrontScan.apply
    monkeypatch.setattr(wavefront._WavefrontScan, "apply", lambda *args: runs.append(1) or apply(*args))
    torch.manual_seed(12)
    case = Case(16, 40, 16, hidden, num_layers=num_layers)
    module, reference = oracle.make_pair(*LAYERS[cell][:2], case, dtype, backend="triton")
    x, state = make_inputs(case, lstm=cell == "lstm")
    # The same rounded inputs for both.
    x, hx = x.to(dtype).float(), oracle.as_state([h.to(dtype).float().to(DEVICE) for h in oracle.as_list(state)], state)
    expected = wavefront.wavefront_problem(cell, num_layers, False, False, False, hidden, 16, dtype, DEVICE)
    compare_with_torch(module.to(DEVICE), reference.to(DEVICE), x.to(DEVICE), hx, dtype=dtype)
    assert runs == ([1] if expected is None else []), expected
