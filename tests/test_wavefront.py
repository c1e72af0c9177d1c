"""Unidirectional LSTM, GRU and Elman RNN stacks as one wavefront launch per pass (rnnfast/wavefront.py,
issue 26 item 1), planned as on an H100 (RNNFAST_PLAN_TARGET=h100) and run by the threaded interpreter,
every program in its own thread with random yields: against torch.nn for 2 and 3 layers, proj_size,
lengths, dropout (torch.nn's own draws), half precision and every gradient. Negative control: one step behind instead of
two, the upper layers read their input as it is being written, and the comparison catches it."""

import pytest
import torch
import triton.language as tl
from torch import nn

import rnnfast
from rnnfast import wavefront
from rnnfast.kernels import configs, launch, recurrence
from tests.oracle import (
    LAYERS,
    Case,
    as_list,
    assert_matches,
    compare_with_torch,
    make_inputs,
    make_pair,
    strided_grad_output,
)
from tests.threaded import threaded_programs

KERNELS = ("_lstm_fwd_kernel", "_lstm_bwd_kernel")
RNN_KERNELS = ("_rnn_fwd_kernel", "_rnn_bwd_kernel")
GRU_KERNELS = ("_gru_fwd_kernel", "_gru_bwd_kernel")


@pytest.fixture
def h100(monkeypatch):
    monkeypatch.setenv("RNNFAST_PLAN_TARGET", "h100")
    monkeypatch.delenv("RNNFAST_NO_GRID_SYNC", raising=False)
    monkeypatch.setattr(launch, "_timed_out_devices", set())


def force_layer_by_layer_backward(monkeypatch):
    """The wavefront forward's backward runs layer by layer (wavefront.backward_wavefront's answer where the
    layer above's W_ih neither streams well nor fits on chip)."""
    monkeypatch.setattr(wavefront, "backward_wavefront", lambda *shape: False)


@pytest.fixture
def layer_by_layer_backward(monkeypatch):
    force_layer_by_layer_backward(monkeypatch)


@pytest.fixture
def stacks(monkeypatch):
    """Counts the wavefront launches (stack_scan calls) and the scan kernel launches by kernel name."""
    from triton.runtime.interpreter import InterpretedFunction

    counts = {"stacks": 0}
    run, apply = InterpretedFunction.run, wavefront._WavefrontScan.apply

    def counting(self, *args, **kwargs):
        counts[self.fn.__name__] = counts.get(self.fn.__name__, 0) + 1
        return run(self, *args, **kwargs)

    def counting_apply(*args):
        counts["stacks"] += 1
        return apply(*args)

    monkeypatch.setattr(InterpretedFunction, "run", counting)
    monkeypatch.setattr(wavefront._WavefrontScan, "apply", counting_apply)
    return counts


def lstm_pair(case: Case, dtype=torch.float32, **options):
    return make_pair(rnnfast.LSTM, nn.LSTM, case, dtype=dtype, backend="triton", **options)


@pytest.mark.parametrize(
    "case",
    [Case(3, 5, 4, 20, num_layers=2), Case(2, 4, 3, 12, num_layers=3, batch_first=True), Case(1, 1, 2, 20, 2)],
    ids=str,
)
def test_wavefront_matches_torch_nn(case, h100, stacks):
    assert wavefront.wavefront_problem(
        "lstm", case.num_layers, False, False, False, case.hidden_size, case.batch, torch.float32, None
    ) is None  # fmt: skip
    torch.manual_seed(0)
    module, reference = lstm_pair(case)
    x, hx = make_inputs(case)
    with threaded_programs(random_yields=0.2, seed=1):
        compare_with_torch(module, reference, x, hx, grad_output=strided_grad_output(case))
    # One launch per pass for the whole stack.
    assert stacks == {"stacks": 1, KERNELS[0]: 1, KERNELS[1]: 1}, stacks


def test_wavefront_input_weights_on_chip_split_across_warps(h100, stacks):
    """H64: the forward holds each upper layer's W_in on chip beside W_hh, each slice's K split between
    two warps (configs.plan_wavefront_lanes); every gradient against torch.nn."""
    case = Case(2, 3, 5, 64, num_layers=2)
    plan = configs.plan_wavefront_lanes("lstm", 64, 2, torch.float32, None, 2)
    assert plan.forward.in_pieces == plan.forward.k_pieces == (64,) and plan.forward.k_split == 2
    torch.manual_seed(2)
    module, reference = lstm_pair(case)
    x, hx = make_inputs(case)
    with threaded_programs(random_yields=0.05, seed=2):
        compare_with_torch(module, reference, x, hx)
    assert stacks == {"stacks": 1, KERNELS[0]: 1, KERNELS[1]: 1}, stacks


def test_wavefront_input_weights_streamed(h100, stacks, monkeypatch):
    """Where W_in does not fit on chip beside W_hh the forward streams it from L2 (as the backward always
    does): forced here by planning the lanes without it."""
    monkeypatch.setattr(launch, "plan_wavefront_lanes", configs.plan_scan)
    case = Case(3, 4, 5, 20, num_layers=3)
    assert launch.plan_wavefront_lanes("lstm", 20, 3, torch.float32, None, 3).forward.in_pieces == ()
    torch.manual_seed(3)
    module, reference = lstm_pair(case, dropout=0.3)
    module.eval(), reference.eval()
    x, hx = make_inputs(case)
    with threaded_programs(random_yields=0.2, seed=3):
        compare_with_torch(module, reference, x, hx)
    assert stacks["stacks"] == 1


def compare_stack_with_torch(module_class, reference_class, case: Case, seed: int, random_yields: float, **options):
    """Runs `case` through the rnnfast stack (threaded) and torch.nn's, with strided grad_output: output,
    final state and every gradient must match."""
    torch.manual_seed(seed)
    module, reference = make_pair(module_class, reference_class, case, backend="triton", **options)
    x, hx = make_inputs(case, lstm=module_class is rnnfast.LSTM)
    with threaded_programs(random_yields=random_yields, seed=seed):
        compare_with_torch(module, reference, x, hx, grad_output=strided_grad_output(case))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_wavefront_matches_torch_nn(nonlinearity, h100, stacks):
    """The Elman RNN's wavefront: 3 layers, strided input and grad_output, every gradient."""
    case = Case(3, 5, 4, 20, num_layers=3)
    compare_stack_with_torch(rnnfast.RNN, nn.RNN, case, 10, 0.2, nonlinearity=nonlinearity)
    assert stacks == {"stacks": 1, RNN_KERNELS[0]: 1, RNN_KERNELS[1]: 1}, stacks


def test_elman_wavefront_dropout_and_layer_by_layer_backward(h100, stacks, layer_by_layer_backward):
    """The Elman RNN's wavefront forward with dropout (torch.nn's draws), its backward layer by layer:
    every gradient against torch.nn."""
    torch.manual_seed(11)
    reference = nn.RNN(5, 12, num_layers=2, dropout=0.5)
    module = rnnfast.RNN(5, 12, num_layers=2, dropout=0.5, backend="triton")
    module.load_state_dict(reference.state_dict())
    x, h0 = torch.randn(4, 3, 5), torch.randn(2, 3, 12)
    results = []
    for layers in (module, reference):
        torch.manual_seed(12)  # the same dropout draws
        with threaded_programs(random_yields=0.2, seed=11):
            out, h_n = layers(x, h0)
            loss = (out * out).sum() + (h_n * h_n).sum()
            results.append((out, h_n, *torch.autograd.grad(loss, list(layers.parameters()))))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output, h_n or parameter gradient")
    assert stacks == {"stacks": 1, RNN_KERNELS[0]: 1, RNN_KERNELS[1]: 2}, stacks


def test_gru_wavefront_matches_torch_nn(h100, stacks):
    """The GRU's wavefront (b_hh inside the reset product, in the kernel; the gradient reaching the layer
    below from the input projection's gate gradients, dgates_x): 3 layers, strided input and grad_output,
    every gradient."""
    compare_stack_with_torch(rnnfast.GRU, nn.GRU, Case(3, 5, 4, 20, num_layers=3), 20, 0.2)
    assert stacks == {"stacks": 1, GRU_KERNELS[0]: 1, GRU_KERNELS[1]: 1}, stacks


def test_gru_wavefront_without_bias_input_weights_on_chip(h100, stacks):
    """bias=False (no b_ih, b_hh) at H48 with batch 1, where the forward holds W_in on chip."""
    case = Case(1, 4, 3, 48, num_layers=2)
    assert configs.plan_wavefront_lanes("gru", 48, 1, torch.float32, None, 2).forward.in_pieces
    torch.manual_seed(21)
    module, reference = make_pair(rnnfast.GRU, nn.GRU, case, backend="triton", bias=False)
    x, hx = make_inputs(case, lstm=False)
    with threaded_programs(random_yields=0.05, seed=21):
        compare_with_torch(module, reference, x, hx)
    assert stacks == {"stacks": 1, GRU_KERNELS[0]: 1, GRU_KERNELS[1]: 1}, stacks


@pytest.mark.parametrize("backward", ["wavefront", "layer by layer"])
def test_gru_wavefront_dropout_on_packed_input(backward, h100, stacks, monkeypatch):
    """The GRU's wavefront with dropout (torch.nn's draws over the packed rows) and lengths, its backward
    as one wavefront or layer by layer (the gradient from the layer above a GEMM of its dgates_x): the
    output, h_n and every gradient (input included) against torch.nn."""
    if backward == "layer by layer":
        force_layer_by_layer_backward(monkeypatch)
    torch.manual_seed(22)
    reference = nn.GRU(4, 12, num_layers=3, dropout=0.5)
    module = rnnfast.GRU(4, 12, num_layers=3, dropout=0.5, backend="triton")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(5, 3, 4)
    results = []
    for layers in (module, reference):
        inputs = x.clone().requires_grad_()
        packed = nn.utils.rnn.pack_padded_sequence(inputs, torch.tensor([3, 5, 2]), enforce_sorted=False)
        torch.manual_seed(23)
        with threaded_programs(random_yields=0.2, seed=22):
            out, h_n = layers(packed)
            loss = (out.data * out.data).sum() + h_n.sum()
            results.append((out.data, h_n, *torch.autograd.grad(loss, [inputs, *layers.parameters()])))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output, h_n or gradient")
    assert stacks == {"stacks": 1, GRU_KERNELS[0]: 1, GRU_KERNELS[1]: 1 if backward == "wavefront" else 3}, stacks


def test_gru_wavefront_bf16_and_double_backward(h100, stacks):
    """The GRU's wavefront in bf16 against torch.nn in fp32 on the same rounded weights; and create_graph
    (the stack recomputed with torch ops, b_hh kept apart) differentiates again as torch.nn does."""
    case = Case(2, 3, 5, 16, num_layers=2)
    torch.manual_seed(24)
    module, reference = make_pair(rnnfast.GRU, nn.GRU, case, torch.bfloat16, backend="triton")
    x, hx = make_inputs(case, lstm=False)
    x, hx = x.to(torch.bfloat16).float(), hx.to(torch.bfloat16).float()
    with threaded_programs(random_yields=0.1, seed=24):
        compare_with_torch(module, reference, x, hx, dtype=torch.bfloat16)
    assert stacks["stacks"] == 1
    module, reference = make_pair(rnnfast.GRU, nn.GRU, Case(2, 3, 3, 6, num_layers=2), backend="triton")
    results = []
    for layers in (module, reference):
        inputs = x[..., :3].detach().requires_grad_()
        with threaded_programs(random_yields=0.1, seed=25):
            out, _ = layers(inputs)
            (dx,) = torch.autograd.grad(out.sum(), inputs, create_graph=True)
            results.append(torch.autograd.grad((dx * dx).sum(), list(layers.parameters())))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "double backward")


def test_wavefront_proj_size_and_lengths(h100, stacks):
    torch.manual_seed(1)
    reference = nn.LSTM(5, 20, num_layers=3, proj_size=6)
    module = rnnfast.LSTM(5, 20, num_layers=3, proj_size=6, backend="triton")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(5, 4, 5)
    lengths = torch.tensor([5, 2, 4, 1])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    h0, c0 = torch.randn(3, 4, 6), torch.randn(3, 4, 20)
    weights = torch.randn(int(lengths.sum()), 6)
    with threaded_programs(random_yields=0.2, seed=2):
        out, (h_n, c_n) = module(packed, (h0, c0))
        loss = (out.data * weights).sum() + h_n.sum() + (c_n * c_n).sum()
        grads = torch.autograd.grad(loss, list(module.parameters()))
    expected, (expected_h, expected_c) = reference(packed, (h0, c0))
    expected_loss = (expected.data * weights).sum() + expected_h.sum()
    expected_grads = torch.autograd.grad(expected_loss + (expected_c * expected_c).sum(), list(reference.parameters()))
    assert stacks["stacks"] == 1
    assert_matches(out.data, expected.data, torch.float32, "packed output")
    assert_matches(h_n, expected_h, torch.float32, "h_n")
    assert_matches(c_n, expected_c, torch.float32, "c_n")
    for (name, _), mine, theirs in zip(module.named_parameters(), grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, f"grad of {name}")


def test_wavefront_dropout_draws_as_torch_nn(h100, stacks):
    """Dropout between layers with torch.nn's random numbers: the noise of every upper layer is drawn
    before the launch, in layer order, by the call torch.nn's CPU LSTM makes between its layers."""
    case = Case(3, 4, 5, 12, num_layers=3)
    module, reference = lstm_pair(case, dropout=0.4)
    x, hx = make_inputs(case)
    torch.manual_seed(7)
    with threaded_programs(random_yields=0.2, seed=3):
        out, (h_n, c_n) = module(x, hx)
        grads = torch.autograd.grad(out.sum() + h_n.sum() + c_n.sum(), list(module.parameters()))
    torch.manual_seed(7)
    expected, (expected_h, expected_c) = reference(x, hx)
    expected_loss = expected.sum() + expected_h.sum() + expected_c.sum()
    expected_grads = torch.autograd.grad(expected_loss, list(reference.parameters()))
    assert stacks["stacks"] == 1
    assert_matches(out, expected, torch.float32, "output with dropout")
    assert_matches(h_n, expected_h, torch.float32, "h_n with dropout")
    for mine, theirs in zip(grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "parameter gradient with dropout")
    # The draws are the layer-by-layer scan's: the same seed gives the same output on the PyTorch scan.
    module.backend = "scan"
    torch.manual_seed(7)
    assert_matches(module(x, hx)[0], out, torch.float32, "output of the layer-by-layer scan")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_wavefront_half_precision(dtype, h100, stacks):
    case = Case(3, 4, 5, 20, num_layers=2)
    torch.manual_seed(4)
    module, reference = lstm_pair(case, dtype)
    x, hx = make_inputs(case)
    x, hx = x.to(dtype).float(), tuple(h.to(dtype).float() for h in hx)
    with threaded_programs(random_yields=0.1, seed=4):
        compare_with_torch(module, reference, x, hx, dtype=dtype)
    assert stacks["stacks"] == 1


def test_wavefront_double_backward(h100):
    """create_graph=True: the backward recomputes the stack with plain torch ops (rnnfast.differentiable),
    so a gradient penalty differentiates again, as with torch.nn."""
    torch.manual_seed(5)
    case = Case(2, 3, 3, 6, num_layers=2)
    module, reference = lstm_pair(case)
    x, hx = make_inputs(case)
    results = []
    for layers in (module, reference):
        inputs = x.detach().requires_grad_()
        with threaded_programs(random_yields=0.1, seed=5):
            out, _ = layers(inputs, hx)
            (dx,) = torch.autograd.grad(out.sum(), inputs, create_graph=True)
            results.append(torch.autograd.grad((dx * dx).sum(), list(layers.parameters())))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "double backward")


def test_wavefront_fallback_one_launch_per_step(stacks, monkeypatch):
    """Without the grid barrier (the serial interpreter here; a device whose barrier timed out) the same
    kernels run the wavefront one launch per step: T + 2(L - 1) launches for the whole stack per pass."""
    monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    torch.manual_seed(6)
    case = Case(2, 4, 3, 10, num_layers=3)
    module, reference = lstm_pair(case)
    x, (h0, c0) = make_inputs(case)
    layer_weights = [module._layer_weights(i) for i in range(case.num_layers)]
    for layers in (module, reference):
        layers.zero_grad()
    y, h_n, c_n = wavefront.stack_scan("lstm", x, None, h0, c0, layer_weights, 0.0)
    (y.sum() + h_n.sum() + c_n.sum()).backward()
    expected, (expected_h, expected_c) = reference(x, (h0, c0))
    (expected.sum() + expected_h.sum() + expected_c.sum()).backward()
    steps = case.seq_len + 2 * (case.num_layers - 1)
    assert stacks == {"stacks": 1, KERNELS[0]: steps, KERNELS[1]: steps}, stacks
    assert_matches(y, expected, torch.float32, "output")
    assert_matches(c_n, expected_c, torch.float32, "c_n")
    for (name, p), q in zip(module.named_parameters(), reference.parameters()):
        assert_matches(p.grad, q.grad, torch.float32, f"grad of {name}")


@pytest.mark.parametrize("layers", ["lstm", "gru"])
def test_control_one_step_behind_is_wrong(layers, h100, monkeypatch):
    """Negative control: with the upper layers one step behind, a layer loads y_t of the layer below at
    the barrier where it is published, before every program of that layer has stored it."""
    monkeypatch.setattr(recurrence, "WAVEFRONT_LAG", tl.constexpr(1))
    torch.manual_seed(0)
    case = Case(3, 6, 5, 20, num_layers=3)
    module, reference = make_pair(*LAYERS[layers][:2], case, backend="triton")
    x, hx = make_inputs(case, lstm=layers == "lstm")
    with pytest.raises(AssertionError, match="max error"), threaded_programs(random_yields=0.1, seed=0):
        compare_with_torch(module, reference, x, hx, gradients=False)


@pytest.mark.parametrize(
    "args, reason",
    [
        (("lstm", 1, False, False, False), "one layer"),
        (("lstm", 2, True, False, False), "bidirectional"),
        (("gru", 2, True, False, False), "bidirectional"),
        (("rnn_relu", 1, False, False, False), "one layer"),
        (("lstm", 2, False, True, True), "proj_size with dropout"),
    ],
)
def test_stacks_that_run_layer_by_layer(args, reason, h100):
    assert reason in wavefront.wavefront_problem(*args, 20, 3, torch.float32, None)


def test_stack_whose_layers_do_not_fit_runs_layer_by_layer(h100, monkeypatch):
    monkeypatch.setattr(configs, "plan_scan", lambda *args: configs.plan_layer(*args[:5], directions=1))
    problem = wavefront.wavefront_problem("lstm", 2, False, False, False, 20, 3, torch.float32, None)
    assert "not all resident" in problem


@pytest.mark.parametrize(
    "cell, hidden, dtype, forward, backward, backward_on_chip",
    [("lstm", 64, torch.float32, True, True, True), ("lstm", 128, torch.float16, True, True, True),
     ("rnn_tanh", 64, torch.float32, True, True, False), ("rnn_tanh", 100, torch.float32, True, True, False),
     ("lstm", 257, torch.float16, True, False, False),
     ("lstm", 768, torch.float16, True, True, True), ("gru", 768, torch.float16, True, True, True),
     ("lstm", 1024, torch.float16, False, False, False)],
)  # fmt: skip
def test_wavefront_passes_where_the_model_says_they_gain(
    cell, hidden, dtype, forward, backward, backward_on_chip, h100
):
    """The rule from the MODEL (configs.WAVEFRONT_MAX_W_IH_BYTES): a pass runs as a wavefront where the
    upper layers' W_ih fits on chip beside W_hh (the forward's slices of H columns, the backward's of G*H
    rows; H a multiple of 16; over configs.MAX_INPUT_SLICES_BYTES in 16-row tiles, as the LSTM fp16 H768
    B16 backward on an H100, with Triton 3.9) or is small enough to stream each step (Elman H100, LSTM
    fp16 H257's forward; the backward streams it where that costs nothing: Elman fp32 H64), else its
    layers run one after the other; the forward not at all past that."""
    problem = wavefront.wavefront_problem(cell, 2, False, False, False, hidden, 16, dtype, None)
    assert (problem is None) == forward, problem
    assert forward or "too large to stream" in problem
    assert wavefront.backward_wavefront(cell, 2, hidden, 16, dtype, None) == backward
    plan = configs.plan_wavefront_lanes(cell, hidden, 16, dtype, None, 2)
    assert bool(plan.backward.in_pieces) == backward_on_chip


@pytest.mark.parametrize("layers", ["lstm", "gru", "rnn_tanh"])
def test_wavefront_backward_with_input_weights_on_chip(layers, h100, stacks, monkeypatch):
    """The backward holds its slice of the layer above's W_in on chip beside W_hh ([G*H, units], K split
    across warps as W_hh's) where it fits and is not small enough to stream for free (made so here at
    H32): 3 layers (the top layer's slot past W_in loads zeros), dropout with torch.nn's draws, every
    gradient against torch.nn."""
    monkeypatch.setattr(configs, "W_IH_STREAMS_FREE_BYTES", 0)
    backward = configs.plan_wavefront_lanes(layers, 32, 3, torch.float32, None, 3).backward
    assert backward.in_pieces == backward.k_pieces and backward.k_groups == 1, backward
    torch.manual_seed(30)
    module_class, reference_class = LAYERS[layers][:2]
    reference = reference_class(4, 32, num_layers=3, dropout=0.3)
    module = module_class(4, 32, num_layers=3, dropout=0.3, backend="triton")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(3, 3, 4)
    grad_output = torch.randn(3, 3, 64)[..., ::2]
    results = []
    for net in (module, reference):
        inputs = x.clone().requires_grad_()
        torch.manual_seed(31)
        with threaded_programs(random_yields=0.1, seed=30):
            out, state = net(inputs)
            finals = as_list(state)
            grads = torch.autograd.grad([out, *finals], [inputs, *net.parameters()], [grad_output, *finals])
        results.append((out, *finals, *grads))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output, final state or gradient")
    kernels = {"lstm": KERNELS, "gru": GRU_KERNELS, "rnn_tanh": RNN_KERNELS}[layers]
    assert stacks == {"stacks": 1, kernels[0]: 1, kernels[1]: 1}, stacks


@pytest.fixture
def fresh_input_slice_plans():
    configs._with_input_slices.cache_clear()
    yield
    configs._with_input_slices.cache_clear()


def test_wavefront_forward_with_input_weights_on_chip_in_16_row_tiles(
    h100, stacks, monkeypatch, fresh_input_slice_plans
):
    """Where the widest tile may not hold both slices and W_in does not stream well (the Elman fp16 B64
    H768 forward on an H100), the forward takes 16-row tiles with W_in on chip: made so here at B40 H32
    (three batch tiles, the last one partial); every gradient against torch.nn."""
    monkeypatch.setattr(configs, "MAX_WIDE_TILE_INPUT_SLICES_BYTES", 0)
    monkeypatch.setattr(configs, "WAVEFRONT_MAX_W_IH_BYTES", {**configs.WAVEFRONT_MAX_W_IH_BYTES, "forward": 0})
    forward = configs.plan_wavefront_lanes("rnn_tanh", 32, 40, torch.float32, None, 2).forward
    assert forward.in_pieces and forward.block_b == 16, forward
    compare_stack_with_torch(rnnfast.RNN, nn.RNN, Case(3, 40, 4, 32, num_layers=2), 40, 0.05)
    assert stacks["stacks"] == 1 and stacks[RNN_KERNELS[0]] == 1, stacks


def test_wavefront_backward_with_input_weights_on_chip_over_the_slice_limit_in_16_row_tiles(
    h100, stacks, monkeypatch, fresh_input_slice_plans
):
    """Where both slices exceed configs.MAX_INPUT_SLICES_BYTES (the LSTM fp16 B16 H768 backward on an
    H100: 196,608 B) the backward holds them in 16-row tiles with Triton 3.9 (none of its kernels loads
    or stores local memory per step), with 3.6 only in 16 bits: made so here at fp32 B40 H32 (three batch
    tiles, the last one partial), both passes with W_in on chip; every gradient against torch.nn."""
    monkeypatch.setattr(configs, "MAX_INPUT_SLICES_BYTES", 0)
    monkeypatch.setattr(configs, "W_IH_STREAMS_FREE_BYTES", 0)
    monkeypatch.setattr(configs, "WAVEFRONT_MAX_W_IH_BYTES", {"forward": 0, "backward": 0})
    monkeypatch.setattr(configs, "TRITON_VERSION", (3, 6))
    assert not configs.plan_wavefront_lanes("lstm", 32, 40, torch.float32, None, 2).backward.in_pieces
    monkeypatch.setattr(configs, "TRITON_VERSION", (3, 9))
    plan = configs.plan_wavefront_lanes("lstm", 32, 40, torch.float32, None, 2)
    assert plan.backward.in_pieces and plan.backward.block_b == 16 and plan.forward.block_b == 16, plan
    assert wavefront.backward_wavefront("lstm", 2, 32, 40, torch.float32, None)
    compare_stack_with_torch(rnnfast.LSTM, nn.LSTM, Case(3, 40, 4, 32, num_layers=2), 41, 0.05)
    assert stacks == {"stacks": 1, KERNELS[0]: 1, KERNELS[1]: 1}, stacks


def test_wavefront_forward_with_layer_by_layer_backward(h100, stacks, layer_by_layer_backward):
    """Where the layer above's W_ih neither streams well nor fits on chip the wavefront forward's backward
    runs layer by layer from the top: one launch per layer, each reading the gradient of its output from
    the layer above (a GEMM, times the dropout noise); dropout and lengths, every gradient against
    torch.nn."""
    case = Case(3, 4, 5, 12, num_layers=3)
    module, reference = lstm_pair(case, dropout=0.4)
    x, hx = make_inputs(case)
    grad_output = strided_grad_output(case)
    results = []
    for layers in (module, reference):
        inputs = [x.detach().requires_grad_(), *(h.detach().requires_grad_() for h in hx)]
        torch.manual_seed(8)  # the same dropout draws
        with threaded_programs(random_yields=0.2, seed=8):
            out, (h_n, c_n) = layers(inputs[0], tuple(inputs[1:]))
            leaves = inputs + list(layers.parameters())
            grads = torch.autograd.grad([out, h_n, c_n], leaves, [grad_output, torch.ones_like(h_n), c_n.detach()])
        results.append((out, h_n, c_n, *grads))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output, final states or gradient")
    assert stacks == {"stacks": 1, KERNELS[0]: 1, KERNELS[1]: 3}, stacks


def test_wavefront_barrier_timeout_then_layer_by_layer(h100, stacks, monkeypatch):
    """Under the serial interpreter the wavefront's barrier can never complete: the forward raises
    GridSyncTimeout (one flag read for the launch) and warns; later stacks on that device run layer by
    layer, each layer by the fallback (one launch per step), and are right."""
    monkeypatch.setitem(launch.GRID_SYNC_TIMEOUT_NS, "interpreter", 100_000)
    launch._warn_timeout.cache_clear()
    torch.manual_seed(9)
    case = Case(2, 3, 4, 12, num_layers=2)
    module, reference = lstm_pair(case)
    x, hx = make_inputs(case)
    with pytest.warns(RuntimeWarning, match="timed out"), pytest.raises(launch.GridSyncTimeout, match="timed out"):
        module(x, hx)
    assert stacks["stacks"] == 1
    assert "timed out" in wavefront.wavefront_problem("lstm", 2, False, False, False, 12, 2, torch.float32, None)
    compare_with_torch(module, reference, x, hx)
    assert stacks["stacks"] == 1  # no second wavefront
    assert stacks[KERNELS[0]] == 1 + case.num_layers * case.seq_len, stacks


def test_wavefront_dropout_on_packed_input_draws_as_torch_nn(h100, stacks):
    """With PackedSequence input torch.nn's dropout draws over the packed rows: so do the noise tensors
    drawn before the wavefront's launch (wavefront.dropout_noise)."""
    torch.manual_seed(13)
    reference = nn.LSTM(4, 12, num_layers=3, dropout=0.5)
    module = rnnfast.LSTM(4, 12, num_layers=3, dropout=0.5, backend="triton")
    module.load_state_dict(reference.state_dict())
    x = torch.randn(5, 3, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 5, 2]), enforce_sorted=False)
    results = []
    for layers in (module, reference):
        torch.manual_seed(14)
        with threaded_programs(random_yields=0.2, seed=13):
            out, (h_n, c_n) = layers(packed)
            loss = out.data.sum() + h_n.sum() + c_n.sum()
            results.append((out.data, h_n, c_n, *torch.autograd.grad(loss, list(layers.parameters()))))
    for mine, theirs in zip(*results):
        assert_matches(mine, theirs, torch.float32, "output, final state or gradient")
    assert stacks["stacks"] == 1
