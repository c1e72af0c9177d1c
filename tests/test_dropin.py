"""rnnfast.convert / rnnfast.revert on whole models: the converted model trains, saves, copies and casts like
its torch.nn twin, on the very same Parameter objects."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import rnnfast
from rnnfast.convert import TO_RNNFAST, TO_TORCH
from tests.oracle import assert_matches

BACKENDS = ["scan", "triton"]
VOCAB, SEQ_LEN, BATCH, DECODE_STEPS = 7, 3, 2, 2


class Seq2Seq(nn.Module):
    """Every recurrent module type: embedding -> bidirectional 2-layer LSTM -> GRU -> relu RNN, then a
    decoder of LSTMCell -> GRUCell -> RNNCell steps, and one linear head over every position."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 5)
        self.encoder = nn.LSTM(5, 4, num_layers=2, bidirectional=True)
        self.middle = nn.GRU(8, 3)
        self.rnn_relu = nn.RNN(3, 3, nonlinearity="relu")
        self.decoder = nn.ModuleDict(
            {"lstm": nn.LSTMCell(3, 3), "gru": nn.GRUCell(3, 3), "rnn_tanh": nn.RNNCell(3, 3, bias=False)}
        )
        self.head = nn.Linear(3, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, _ = self.encoder(self.embedding(tokens))
        x, h = self.middle(x)
        x, h = self.rnn_relu(x, h)
        h, c, step = h[0], torch.zeros_like(h[0]), x[-1]
        positions = [x]
        for _ in range(DECODE_STEPS):
            h, c = self.decoder["lstm"](step, (h, c))
            h = self.decoder["gru"](step, h)
            step = self.decoder["rnn_tanh"](h)
            positions.append(step.unsqueeze(0))
        return self.head(torch.cat(positions))  # [SEQ_LEN + DECODE_STEPS, BATCH, VOCAB]


def make_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(VOCAB, (SEQ_LEN, BATCH), generator=generator)
    targets = torch.randint(VOCAB, (SEQ_LEN + DECODE_STEPS, BATCH), generator=generator)
    return tokens, targets


def loss_of(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())


def recurrent_types(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))}


def assert_all_rnnfast(model: nn.Module, backend: str) -> None:
    types = recurrent_types(model)
    assert len(types) == 6
    assert all(t in TO_TORCH for t in types.values()), types
    assert all(m.backend == backend for m in model.modules() if type(m) in TO_TORCH)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trains_step_by_step_like_torch_nn(backend):
    torch.manual_seed(0)
    model = Seq2Seq()
    twin = copy.deepcopy(model)
    parameters_before = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # made before convert
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)

    assert rnnfast.convert(model, backend=backend) is model
    assert_all_rnnfast(model, backend)
    assert all(recurrent_type in TO_RNNFAST for recurrent_type in recurrent_types(twin).values())
    parameters_after = dict(model.named_parameters())
    assert parameters_after.keys() == parameters_before.keys()
    assert all(parameters_after[name] is parameter for name, parameter in parameters_before.items())

    for step in range(3):
        tokens, targets = make_batch(step)
        losses = []
        for module, module_optimizer in ((model, optimizer), (twin, twin_optimizer)):
            module_optimizer.zero_grad()
            loss = loss_of(module, tokens, targets)
            loss.backward()
            module_optimizer.step()
            losses.append(loss)
        assert_matches(losses[0], losses[1], torch.float32, f"loss at step {step}")
        for (name, parameter), twin_parameter in zip(model.named_parameters(), twin.parameters()):
            assert_matches(parameter, twin_parameter, torch.float32, f"{name} at step {step}")
    assert all(parameters_before[name] is parameter for name, parameter in model.named_parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_in_eval_mode(backend):
    torch.manual_seed(0)
    twin = Seq2Seq().eval()
    model = rnnfast.convert(copy.deepcopy(twin), backend=backend)
    assert not any(m.training for m in model.modules())
    tokens, targets = make_batch()
    for module in (model, twin):
        loss_of(module, tokens, targets).backward()
    for (name, parameter), twin_parameter in zip(model.named_parameters(), twin.parameters()):
        assert_matches(parameter.grad, twin_parameter.grad, torch.float32, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_are_bitwise_identical(backend):
    torch.manual_seed(0)
    model = rnnfast.convert(Seq2Seq(), backend=backend)
    tokens, targets = make_batch()
    runs = []
    for _ in range(2):
        model.zero_grad()
        output = model(tokens)
        nn.functional.cross_entropy(output.flatten(0, 1), targets.flatten()).backward()
        runs.append([output.detach()] + [p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(first, second) for first, second in zip(*runs))


def test_revert_round_trip():
    torch.manual_seed(0)
    original = Seq2Seq()
    original_types = recurrent_types(original)
    parameters = list(original.parameters())
    tokens, _ = make_batch()
    expected = original(tokens)

    model = rnnfast.revert(rnnfast.convert(original, backend="scan"))
    assert recurrent_types(model) == original_types
    assert all(after is before for after, before in zip(model.parameters(), parameters))
    assert torch.equal(model(tokens), expected)


def test_root_module_and_shared_modules():
    lstm = nn.LSTM(3, 4)
    converted = rnnfast.convert(lstm, backend="scan")
    assert type(converted) is rnnfast.LSTM and converted.weight_hh_l0 is lstm.weight_hh_l0
    assert type(rnnfast.revert(converted)) is nn.LSTM

    shared = nn.GRUCell(3, 3)
    model = rnnfast.convert(nn.ModuleDict({"first": shared, "again": shared, "nested": nn.Sequential(shared, None)}))
    assert type(model["first"]) is rnnfast.GRUCell
    assert model["again"] is model["first"] and model["nested"][0] is model["first"]


def test_convert_keeps_settings_mode_and_hooks():
    model = nn.ModuleDict(
        {
            "lstm": nn.LSTM(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.25),
            "rnn": nn.RNN(3, 4, nonlinearity="relu").eval(),
            "cell": nn.RNNCell(3, 4, nonlinearity="relu", dtype=torch.float64),
        }
    )
    model["cell"].weight_hh.requires_grad_(False)
    calls = []
    handle = model["rnn"].register_forward_hook(lambda module, args, output: calls.append(type(module)))
    settings = {name: module.__dict__.copy() for name, module in model.items()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about, not even the dropout of the rebuilt LSTM
        rnnfast.convert(model, backend="scan")
    for name, module in model.items():
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "nonlinearity"):
            assert getattr(module, key, None) == settings[name].get(key), (name, key)
        assert module.training == settings[name]["training"]
    assert model["cell"].weight_hh.dtype == torch.float64 and not model["cell"].weight_hh.requires_grad

    model["rnn"](torch.randn(2, 1, 3))
    handle.remove()
    model["rnn"](torch.randn(2, 1, 3))
    assert calls == [rnnfast.RNN]


def test_pruned_module_keeps_working():
    """Pruning replaces a parameter by `<name>_orig`, a mask buffer, a plain tensor attribute and a hook."""
    pair = []
    for _ in range(2):  # torch cannot deepcopy a pruned module
        torch.manual_seed(0)
        pair.append(nn.GRU(3, 4))
        prune.l1_unstructured(pair[-1], "weight_hh_l0", amount=0.5)
    model, twin = rnnfast.convert(pair[0], backend="scan"), pair[1]
    assert model.state_dict().keys() == twin.state_dict().keys()
    x = torch.randn(5, 2, 3)
    outputs = [module(x)[0] for module in (model, twin)]
    assert_matches(outputs[0], outputs[1], torch.float32, "fp32 result")
    for output in outputs:
        output.sum().backward()
    assert_matches(model.weight_hh_l0_orig.grad, twin.weight_hh_l0_orig.grad, torch.float32, "fp32 result")
    assert (model.weight_hh_l0_orig.grad[model.weight_hh_l0_mask == 0] == 0).all()
    assert torch.equal(rnnfast.revert(model)(x)[0], outputs[1])


def test_subclasses_are_warned_about_and_left():
    class TracedLSTM(nn.LSTM):
        pass

    class TracedGRU(rnnfast.GRU):
        pass

    model = nn.Sequential(nn.Sequential(TracedLSTM(3, 4)), nn.GRU(4, 4), TracedGRU(4, 4))
    with pytest.warns(UserWarning, match=r"subclasses.*0\.0 \(.*TracedLSTM\)") as record:
        rnnfast.convert(model)
    assert len(record) == 1 and "TracedGRU" not in str(record[0].message)  # already rnnfast: nothing to do
    assert [type(m) for m in (model[0][0], model[1], model[2])] == [TracedLSTM, rnnfast.GRU, TracedGRU]

    with pytest.warns(UserWarning, match=r"subclasses.*2 \(.*TracedGRU\)"):
        rnnfast.revert(model)
    assert [type(m) for m in (model[0][0], model[1], model[2])] == [TracedLSTM, nn.GRU, TracedGRU]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_projections_are_converted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4, proj_size=2), nn.GRU(2, 2))
    x = torch.randn(5, 2, 3)
    expected, _ = model[0](x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnnfast.convert(model, backend="scan")
    assert type(model[0]) is rnnfast.LSTM and model[0].proj_size == 2
    assert_matches(model[0](x)[0], expected, torch.float32, "fp32 result")
    assert type(model[1]) is rnnfast.GRU


def test_save_load_and_deepcopy_keep_backend():
    torch.manual_seed(0)
    model = rnnfast.convert(Seq2Seq(), backend="scan")
    tokens, _ = make_batch()
    expected = model(tokens)

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(model)
    for other in (loaded, copied):
        assert_all_rnnfast(other, "scan")
        assert torch.equal(other(tokens), expected)


def test_state_dict_round_trips_between_rnnfast_and_torch_nn():
    torch.manual_seed(0)
    model = rnnfast.convert(Seq2Seq(), backend="scan")
    torch.manual_seed(1)
    plain = Seq2Seq()
    tokens, _ = make_batch()

    assert model.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    assert_matches(plain(tokens), model(tokens), torch.float32, "fp32 result")
    torch.manual_seed(2)
    fresh = rnnfast.convert(Seq2Seq(), backend="scan")
    fresh.load_state_dict(plain.state_dict())
    assert torch.equal(fresh(tokens), model(tokens))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_names_the_way_out():
    """torch.jit.script cannot compile rnnfast's layers: it says so and how to script a torch.nn copy, which
    computes the same numbers."""

    class Tagger(nn.Module):  # (Seq2Seq's forward is not TorchScript)
        def __init__(self):
            super().__init__()
            self.embedding, self.encoder, self.head = nn.Embedding(VOCAB, 5), nn.GRU(5, 4), nn.Linear(4, VOCAB)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embedding(tokens))[0])

    torch.manual_seed(0)
    model = rnnfast.convert(Tagger())
    with pytest.raises(RuntimeError, match=r"torch.jit.script cannot compile rnnfast.GRU: use torch.compile"):
        torch.jit.script(model)
    assert isinstance(model.encoder, rnnfast.GRU)
    scripted = torch.jit.script(rnnfast.revert(copy.deepcopy(model)))
    tokens, _ = make_batch()
    assert_matches(scripted(tokens), model(tokens), torch.float32, "fp32 result")


def test_built_on_the_meta_device_like_torch_nn():
    """A model built without memory (device "meta": shapes only, as large-model loaders do) runs forward
    and backward on meta tensors with torch.nn's shapes, and after to_empty and load_state_dict computes
    torch.nn's numbers."""
    torch.manual_seed(0)
    plain = Seq2Seq()
    # (.to("meta"), not `with torch.device("meta")`: conftest's NaN-filled torch.empty escapes that context.)
    model, reference = rnnfast.convert(Seq2Seq().to("meta")), Seq2Seq().to("meta")
    tokens, targets = make_batch()
    out = model(tokens.to("meta"))
    assert out.device.type == "meta" and out.shape == reference(tokens.to("meta")).shape
    out.sum().backward()
    assert all(p.grad.shape == p.shape for p in model.parameters())
    bidirectional = rnnfast.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True, proj_size=3, device="meta")
    unbatched = torch.empty(3, 5, device="meta")
    output, (h_n, c_n) = bidirectional(unbatched)
    assert (output.shape, h_n.shape, c_n.shape) == ((3, 6), (4, 3), (4, 4))

    model.to_empty(device="cpu")
    model.load_state_dict(plain.state_dict())
    assert_matches(plain(tokens), model(tokens), torch.float32, "fp32 result")
    assert_matches(loss_of(plain, tokens, targets), loss_of(model, tokens, targets), torch.float32, "fp32 loss")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_dtype_casts(dtype):
    torch.manual_seed(0)
    model = rnnfast.convert(Seq2Seq(), backend="scan")
    parameters = list(model.parameters())
    cast = {torch.float64: lambda m: m.to(torch.float64), torch.float16: nn.Module.half}
    cast.get(dtype, nn.Module.bfloat16)(model)
    assert all(after is before and after.dtype == dtype for after, before in zip(model.parameters(), parameters))
    assert_all_rnnfast(model, "scan")

    # 16-bit models are compared with torch.nn in fp32 on the very same rounded weights
    reference = Seq2Seq().to(torch.float64 if dtype == torch.float64 else torch.float32)
    reference.load_state_dict(model.state_dict())
    tokens, targets = make_batch()
    output = model(tokens)
    assert output.dtype == dtype
    assert_matches(output, reference(tokens), dtype, "output")
    loss_of(model, tokens, targets).backward()
    loss_of(reference, tokens, targets).backward()
    for (name, parameter), reference_parameter in zip(model.named_parameters(), reference.parameters()):
        assert parameter.grad.dtype == dtype, name
        assert_matches(parameter.grad, reference_parameter.grad, dtype, "output")


AUTOCAST_LAYERS = [nn.LSTM(3, 4), nn.GRU(3, 4), nn.RNN(3, 4), nn.RNN(3, 4, nonlinearity="relu"), nn.LSTMCell(3, 4),
                   nn.GRUCell(3, 4), nn.RNNCell(3, 4)]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", AUTOCAST_LAYERS, ids=lambda m: f"{type(m).__name__}-{getattr(m, 'mode', '')}")
def test_cpu_autocast_runs_in_the_dtype_torch_nn_runs_in(layer, backend):
    """Under CPU bf16 autocast torch.nn's LSTM, RNN and RNNCell run and return bf16, its GRU, LSTMCell and
    GRUCell fp32; rnnfast's twins do the same, and gradients reach the fp32 parameters."""
    torch.manual_seed(0)
    converted = rnnfast.convert(copy.deepcopy(layer), backend=backend)
    x = torch.randn(5, 2, 3) if isinstance(layer, nn.RNNBase) else torch.randn(2, 3)
    outputs = []
    for module in (converted, layer):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            try:
                output = module(x)
            except RuntimeError:  # torch.nn's LSTM under autocast on a CPU without AVX-512 (oneDNN refuses it)
                assert module is layer
                output = copy.deepcopy(layer).bfloat16()(x.bfloat16())  # what autocast computes: bf16
        outputs.append(output[0] if isinstance(output, tuple) else output)
    assert outputs[0].dtype == outputs[1].dtype
    assert_matches(outputs[0], outputs[1].float(), torch.bfloat16, "output")
    outputs[0].float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in converted.parameters())
