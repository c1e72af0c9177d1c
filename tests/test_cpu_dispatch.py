"""backend="auto" on CPU: each call runs torch's native kernels or rnnfast's scan by the measured rules
(rnnfast/dispatch.py). Both paths are forced here in turn and compared with torch.nn (outputs, final states,
every gradient); the rules themselves are checked against the table they encode, and the module is
checked to follow them. Timings live in bench/, not here."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnfast
from rnnfast import dispatch, modules, native
from tests.oracle import (
    CELLS,
    LAYERS,
    Case,
    as_list,
    as_state,
    assert_matches,
    compare_with_torch,
    make_inputs,
    make_pair,
    strided_grad_output,
)

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

CASES = [
    Case(3, 6, 5, 17),
    Case(1, 1, 5, 17),  # T=1, batch 1
    Case(2, 4, 7, 20, num_layers=3, bidirectional=True),
    Case(5, 3, 6, 8, num_layers=2, bidirectional=True, batch_first=True, with_hx=False),
]


class Paths:
    """Records which implementation each call of an rnnfast module ran."""

    def __init__(self, monkeypatch):
        self.ran: list[str] = []
        for name, fn in (("run_layers", native.run_layers), ("run_cell", native.run_cell)):
            monkeypatch.setattr(native, name, self._recording("native", fn))
        monkeypatch.setattr(modules, "scan", self._recording("scan", modules.scan))

    def _recording(self, path, fn):
        def wrapper(*args, **kwargs):
            if not self.ran or self.ran[-1] != path:
                self.ran.append(path)
            return fn(*args, **kwargs)

        return wrapper

    def take(self) -> list[str]:
        ran, self.ran = self.ran, []
        return ran


@pytest.fixture(params=["native", "scan"])
def path(request, monkeypatch):
    """Forces backend="auto" onto one path, whatever the rules say, and checks every call took it."""
    wins = request.param == "native"
    monkeypatch.setattr(dispatch, "cpu_native_wins", lambda *args: wins)
    paths = Paths(monkeypatch)
    yield request.param
    assert set(paths.take()) <= {request.param}


@pytest.fixture
def paths(monkeypatch):
    return Paths(monkeypatch)


def lstm_hx(hx, proj_size: int):
    return hx if hx is None or not proj_size else (hx[0][..., :proj_size].contiguous(), hx[1])


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("layer", LAYERS)
def test_layers_match_torch_nn_on_both_paths(layer, case, path):
    module_class, reference_class, options = LAYERS[layer]
    torch.manual_seed(0)
    module, reference = make_pair(module_class, reference_class, case, backend="auto", **options)
    is_lstm = module_class is rnnfast.LSTM
    x, hx = make_inputs(case, lstm=is_lstm)
    hx = lstm_hx(hx, options.get("proj_size", 0))
    grad_output = None if options else strided_grad_output(case)
    compare_with_torch(module, reference, x, hx, grad_output=grad_output)
    with torch.no_grad():
        compare_with_torch(module, reference, x, hx, gradients=False)
    unbatched = x[:, 0] if not case.batch_first else x[0]
    compare_with_torch(module, reference, unbatched)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("feed", ["packed", "lengths"])
def test_variable_lengths_on_both_paths(layer, feed, path):
    """PackedSequence in and out, and lengths= on padded input, against torch.nn on the packed batch."""
    module_class, reference_class, options = LAYERS[layer]
    torch.manual_seed(1)
    module, reference = make_pair(module_class, reference_class, Case(4, 6, 5, 7, num_layers=2, bidirectional=True),
                                  backend="auto", **options)  # fmt: skip
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(6, 4, 5)
    proj = options.get("proj_size", 0)
    h0 = torch.randn(4, 4, proj or 7)
    hx = (h0, torch.randn(4, 4, 7)) if module_class is rnnfast.LSTM else h0
    leaves = [x.clone().requires_grad_(), *(h.clone().requires_grad_() for h in as_list(hx))]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def state(tensors):
        return as_state(tensors, hx)

    ref_out, ref_final = reference(
        pack_padded_sequence(ref_leaves[0], lengths, enforce_sorted=False), state(ref_leaves[1:])
    )
    if feed == "packed":
        out, final = module(pack_padded_sequence(leaves[0], lengths, enforce_sorted=False), state(leaves[1:]))
        assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
        assert torch.equal(out.unsorted_indices, ref_out.unsorted_indices)
        out_data = out.data
    else:
        out, final = module(leaves[0], state(leaves[1:]), lengths=lengths)
        assert_matches(out, pad_packed_sequence(ref_out, total_length=6)[0], torch.float32, "padded output")
        out_data = pack_padded_sequence(out, lengths, enforce_sorted=False).data
    assert_matches(out_data, ref_out.data, torch.float32, "output")
    finals, ref_finals = as_list(final), as_list(ref_final)
    for mine, theirs in zip(finals, ref_finals):
        assert_matches(mine, theirs, torch.float32, "final state")
    grad_data = torch.randn_like(ref_out.data)
    grad_finals = [torch.randn_like(f) for f in ref_finals]
    grads = torch.autograd.grad([out_data, *finals], leaves + list(module.parameters()), [grad_data, *grad_finals])
    ref_grads = torch.autograd.grad(
        [ref_out.data, *ref_finals], ref_leaves + list(reference.parameters()), [grad_data, *grad_finals]
    )
    for mine, theirs in zip(grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, "gradient")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_cells_match_torch_nn_on_both_paths(cell, bias, path):
    module_class, reference_class, options = CELLS[cell]
    torch.manual_seed(2)
    reference = reference_class(6, 11, bias=bias, **options)
    module = module_class(6, 11, bias=bias, **options)
    module.load_state_dict(reference.state_dict())
    for shape in ((3,), ()):
        x = torch.randn(*shape, 6)
        hx = [torch.randn(*shape, 11) for _ in range(2 if cell == "lstm" else 1)]
        leaves = [t.clone().requires_grad_() for t in (x, *hx)]
        ref_leaves = [t.clone().requires_grad_() for t in (x, *hx)]

        def run(m, tensors):
            result = m(tensors[0], tuple(tensors[1:]) if cell == "lstm" else tensors[1])
            return result if isinstance(result, tuple) else (result,)

        outs, ref_outs = run(module, leaves), run(reference, ref_leaves)
        grad_outputs = [torch.randn_like(o) for o in ref_outs]
        grads = torch.autograd.grad(outs, leaves + list(module.parameters()), grad_outputs)
        ref_grads = torch.autograd.grad(ref_outs, ref_leaves + list(reference.parameters()), grad_outputs)
        for mine, theirs in zip((*outs, *grads), (*ref_outs, *ref_grads)):
            assert_matches(mine, theirs, torch.float32, "cell result or gradient")
        with torch.no_grad():
            for mine, theirs in zip(run(module, [x, *hx]), run(reference, [x, *hx])):
                assert_matches(mine, theirs, torch.float32, "cell inference")


@pytest.mark.parametrize("layer", ["lstm", "gru", "rnn_relu"])
def test_dropout_eval_backward_and_double_backward_on_both_paths(layer, path):
    """Dropout between layers draws torch.nn's mask from the same seed; eval() still has a backward; and
    second-order gradients match torch.nn's."""
    module_class, reference_class, options = LAYERS[layer]
    torch.manual_seed(3)
    module, reference = make_pair(module_class, reference_class, Case(2, 5, 4, 6, num_layers=3), backend="auto",
                                  dropout=0.5, **options)  # fmt: skip
    x = torch.randn(5, 2, 4)
    torch.manual_seed(8)
    expected, _ = reference(x)
    torch.manual_seed(8)
    actual, _ = module(x)
    assert_matches(actual, expected, torch.float32, "output with dropout")

    module.eval()
    reference.eval()
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [m(x_)[0] for m, x_ in ((module, xs[0]), (reference, xs[1]))]
    firsts = [torch.autograd.grad(o.square().sum(), x_, create_graph=True)[0] for o, x_ in zip(outs, xs)]
    seconds = [torch.autograd.grad(g.square().sum(), list(m.parameters())) for g, m in zip(firsts, (module, reference))]
    assert_matches(firsts[0], firsts[1], torch.float32, "eval-mode gradient")
    for mine, theirs in zip(*seconds):
        assert_matches(mine, theirs, torch.float32, "second-order gradient")


@pytest.mark.parametrize("layer", ["lstm", "gru", "rnn_tanh"])
def test_cpu_autocast_on_both_paths(layer, path):
    module_class, reference_class, options = LAYERS[layer]
    torch.manual_seed(4)
    module, reference = make_pair(module_class, reference_class, Case(2, 5, 3, 4), backend="auto", **options)
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)[0]
        try:
            ref_out = reference(x)[0]
        except RuntimeError:  # torch.nn's LSTM under autocast on a CPU without AVX-512 (oneDNN refuses it)
            ref_out = None
    if ref_out is None:  # what autocast computes: the layer in bf16
        ref_out = copy.deepcopy(reference).bfloat16()(x.bfloat16())[0]
    assert out.dtype == ref_out.dtype
    assert_matches(out, ref_out.float(), torch.bfloat16, "output")
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())


def test_compile_and_export_with_the_default_backend(paths):
    """Under tracing the native CPU LSTM has no fake-tensor implementation: auto runs rnnfast's ops there."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnnfast.LSTM(4, 6, batch_first=True)
            self.gru = rnnfast.GRU(6, 5, batch_first=True)

        def forward(self, x):
            return self.gru(self.lstm(x)[0])[0].sum(1)

    torch.manual_seed(5)
    model = Model()
    x = torch.randn(3, 5, 4)
    with torch.no_grad():
        expected = model(x)
    assert paths.take() == ["native"]
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend="aot_eager")
    assert_matches(compiled(x), expected, torch.float32, "compiled")
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
        assert_matches(exported.module()(x), expected, torch.float32, "exported")
    assert set(paths.take()) == {"scan"}
    assert any("rnnfast.scan" in str(node.target) for node in exported.graph.nodes)


def test_backend_scan_always_runs_the_scan(paths):
    for module in (rnnfast.LSTM(3, 4, backend="scan"), rnnfast.LSTMCell(3, 4, backend="scan")):
        x = torch.randn(5, 2, 3) if isinstance(module, nn.RNNBase) else torch.randn(2, 3)
        with torch.no_grad():
            module(x)
        assert paths.take() == ["scan"]


def test_backend_torch_is_the_scan_s_former_name(paths, monkeypatch):
    """backend="torch" (the name before "scan") still runs the scan, with a FutureWarning naming the new
    name, in a constructor, in convert() and in RNNFAST_BACKEND."""
    with pytest.warns(FutureWarning, match=r"backend='torch' is deprecated.*backend='scan'"):
        module = rnnfast.GRU(3, 4, backend="torch")
    assert module.backend == "scan"
    with pytest.warns(FutureWarning, match="backend='scan'"):
        converted = rnnfast.convert(nn.Sequential(nn.LSTM(3, 4)), backend="torch")
    assert converted[0].backend == "scan"
    with torch.no_grad():
        module(torch.randn(5, 2, 3))
        assert paths.take() == ["scan"]
        monkeypatch.setenv("RNNFAST_BACKEND", "torch")
        with pytest.warns(FutureWarning, match="backend='scan'"):
            rnnfast.LSTM(3, 4)(torch.randn(5, 2, 3))
        assert paths.take() == ["scan"]


def test_the_rules_encode_the_measured_table():
    """rnnfast/dispatch.py: inference always native; training native for the LSTM on fixed lengths
    (oneDNN's fused backward), the GRU from batch x hidden 8192 on, on fixed lengths from batch 128 (torch's
    loop); the scan trains RNN, the smaller GRUs and the other variable-length batches; cells native."""

    def layers_win(cell, training, varlen, batch, hidden):
        return dispatch.cpu_native_wins(cell, training, varlen, batch, hidden, one_step=False)

    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for batch, hidden in ((16, 64), (64, 256)):
            assert layers_win(cell, False, False, batch, hidden)
            assert layers_win(cell, False, True, batch, hidden)
        assert layers_win(cell, True, False, 16, 64) == (cell == "lstm")
        assert layers_win(cell, True, False, 64, 256) == (cell == "lstm")  # GRU: batch under 128
        assert layers_win(cell, True, False, 128, 128) == (cell in ("lstm", "gru"))
        assert layers_win(cell, True, False, 128, 32) == (cell == "lstm")  # GRU: size under 8192
        assert not layers_win(cell, True, True, 16, 64)
        assert layers_win(cell, True, True, 64, 128) == (cell == "gru")
        assert layers_win(cell, True, True, 32, 256) == (cell == "gru")
        for training in (False, True):
            assert dispatch.cpu_native_wins(cell, training, False, 16, 64, one_step=True)
    assert not layers_win("gru", True, True, 32, 128)


@pytest.mark.parametrize("layer", ["lstm", "gru", "rnn_tanh"])
def test_auto_follows_the_rules(layer, paths):
    module_class, _, options = LAYERS[layer]
    module = module_class(3, 4, **options)
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 2])
    packed = pack_padded_sequence(x, lengths)
    h0 = torch.zeros(1, 2, 4, requires_grad=True)
    hx = (h0, torch.zeros(1, 2, 4)) if layer == "lstm" else h0
    trains_natively = ["native"] if layer == "lstm" else ["scan"]
    with torch.no_grad():
        for call in (lambda: module(x), lambda: module(x, lengths=lengths), lambda: module(packed)):
            call()
            assert paths.take() == ["native"]
    module(x)
    assert paths.take() == trains_natively
    module(x, lengths=lengths)
    module(packed)
    assert paths.take() == ["scan"]
    module.requires_grad_(False)
    module(x)  # grad mode on, but nothing requires a gradient: inference
    assert paths.take() == ["native"]
    module(x, hx)  # only the initial state requires one: training
    assert paths.take() == trains_natively
    module(x.requires_grad_())
    assert paths.take() == trains_natively


def test_cells_run_natively(paths):
    for cell in (rnnfast.LSTMCell(3, 4), rnnfast.GRUCell(3, 4), rnnfast.RNNCell(3, 4, nonlinearity="relu")):
        cell(torch.randn(2, 3))
        with torch.no_grad():
            cell(torch.randn(3))
        assert paths.take() == ["native"]
