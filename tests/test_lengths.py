"""Variable-length batches and LSTM projections against torch.nn with the same state_dict:
PackedSequence input (sorted and unsorted), rnnfast's `lengths=` extension on padded input, proj_size,
and the errors for bad lengths."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnfast
from rnnfast import pytorch_scan
from tests import oracle
from tests.oracle import LAYERS, Case, as_list, as_state, assert_matches, compare_with_torch

BACKENDS = ["scan", "triton"]
LENGTHS = {
    "unsorted": ([5, 1, 6, 3], False),  # contains 1 and the full length
    "sorted": ([6, 5, 3, 1], True),
    "one-sequence": ([4], True),
    "all-full": ([6, 6, 6], False),
}
HIDDEN = 7


def make_pair(cell: str, backend: str, dtype=torch.float32, num_layers=2, bidirectional=True):
    """The twins of LAYERS[cell] with input size 5 (the batch and sequence length are the tests' own)."""
    module_class, reference_class, options = LAYERS[cell]
    case = Case(0, 0, 5, HIDDEN, num_layers, bidirectional)
    return oracle.make_pair(module_class, reference_class, case, dtype, backend, **options)


def make_hx(cell: str, module, batch: int, dtype=torch.float32):
    states = module.num_layers * (2 if module.bidirectional else 1)
    h = torch.randn(states, batch, getattr(module, "proj_size", 0) or HIDDEN).to(dtype).float()
    if cell.startswith("lstm"):
        return h, torch.randn(states, batch, HIDDEN).to(dtype).float()
    return h


def run_packed(module, x, lengths, enforce_sorted, hx, dtype):
    """Packs x [T, B, I] with lengths, runs module, returns (PackedSequence, final states, leaves)."""
    x = x.detach().to(dtype).requires_grad_()
    hx = as_state([h.detach().to(dtype).requires_grad_() for h in as_list(hx)], hx)
    out, final = module(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted), hx)
    return out, final, [x, *as_list(hx)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths_case", LENGTHS)
@pytest.mark.parametrize("cell", LAYERS)
def test_packed_sequence_matches_torch_nn(cell, lengths_case, backend):
    torch.manual_seed(0)
    lengths, enforce_sorted = LENGTHS[lengths_case]
    module, reference = make_pair(cell, backend)
    x = torch.randn(max(lengths), len(lengths), 5)
    hx = make_hx(cell, module, len(lengths))

    ref_out, ref_final, ref_leaves = run_packed(reference, x, lengths, enforce_sorted, hx, torch.float32)
    out, final, leaves = run_packed(module, x, lengths, enforce_sorted, hx, torch.float32)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
    for mine, theirs in (
        (out.sorted_indices, ref_out.sorted_indices),
        (out.unsorted_indices, ref_out.unsorted_indices),
    ):
        assert (mine is None and theirs is None) or torch.equal(mine, theirs)
    assert_matches(out.data, ref_out.data, torch.float32, "packed output")
    for i, (mine, theirs) in enumerate(zip(as_list(final), as_list(ref_final))):
        assert_matches(mine, theirs, torch.float32, f"final state {i}")

    grad_data = torch.randn_like(ref_out.data)
    grad_final = [torch.randn_like(f) for f in as_list(ref_final)]
    ref_grads = torch.autograd.grad(
        [ref_out.data, *as_list(ref_final)], ref_leaves + list(reference.parameters()), [grad_data, *grad_final]
    )
    grads = torch.autograd.grad(
        [out.data, *as_list(final)], leaves + list(module.parameters()), [grad_data, *grad_final]
    )
    names = ["input", "h0", "c0"][: len(leaves)] + [name for name, _ in module.named_parameters()]
    for name, mine, theirs in zip(names, grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, f"grad of {name}")
    padded = torch.arange(x.shape[0]).unsqueeze(1) >= torch.tensor(lengths)
    assert (grads[0][padded] == 0).all(), "padded positions of the input must get zero gradient"


def test_reference_matmuls_cover_every_active_row():
    wide = pytorch_scan.MIN_SKIPPED_ELEMENTS  # one skipped row of this hidden size is worth skipping
    # Longest first (as ops.scan orders a batch for the SCAN path): only the active rows.
    assert pytorch_scan._active_rows(torch.tensor([5, 3, 3, 1]), 4, wide, 5) == [4, 3, 3, 1, 1]
    # In any other order, up to the last active row: still every active row, with some inactive ones.
    assert pytorch_scan._active_rows(torch.tensor([1, 5, 2]), 3, wide, 5) == [3, 3, 2, 2, 2]
    assert pytorch_scan._active_rows(None, 3, wide, 2) == [3, 3]
    # Rows too small to be worth skipping are all multiplied.
    assert pytorch_scan._active_rows(torch.tensor([5, 3, 3, 1]), 4, wide // 2, 5) == [4, 4, 4, 1, 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", LAYERS)
def test_lengths_extension_equals_packing(cell, backend):
    """forward(padded, lengths=...) gives torch.nn's packed result, padded with zeros, in the caller's order."""
    torch.manual_seed(1)
    module, reference = make_pair(cell, backend)
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, 5)  # batch_first below
    module.batch_first = reference.batch_first = True
    hx = make_hx(cell, module, 4)
    ref_out, ref_final = reference(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hx)
    ref_padded, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=6)
    out, final = module(x, hx, lengths=lengths)
    assert_matches(out, ref_padded, torch.float32, "padded output")
    padded = torch.arange(6) >= lengths.unsqueeze(1)
    assert (out[padded] == 0).all()
    for i, (mine, theirs) in enumerate(zip(as_list(final), as_list(ref_final))):
        assert_matches(mine, theirs, torch.float32, f"final state {i}")
    as_list_lengths, _ = module(x, hx, lengths=lengths.tolist())
    assert torch.equal(as_list_lengths, out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cell", ["lstm", "lstm-proj", "gru", "rnn_tanh"])
def test_packed_half_precision(cell, dtype, backend):
    torch.manual_seed(2)
    module, reference = make_pair(cell, backend, dtype=dtype)
    lengths = [4, 2, 5]
    x = torch.randn(5, 3, 5).to(dtype).float()
    hx = make_hx(cell, module, 3, dtype)
    ref_out, ref_final, _ = run_packed(reference, x, lengths, False, hx, torch.float32)
    out, final, _ = run_packed(module, x, lengths, False, hx, dtype)
    assert out.data.dtype == dtype
    assert_matches(out.data, ref_out.data, dtype, "packed output")
    for i, (mine, theirs) in enumerate(zip(as_list(final), as_list(ref_final))):
        assert_matches(mine, theirs, dtype, f"final state {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_projections_without_packing(backend):
    torch.manual_seed(3)
    module, reference = make_pair("lstm-proj", backend, num_layers=3)
    compare_with_torch(module, reference, torch.randn(4, 2, 5), make_hx("lstm-proj", module, 2))
    compare_with_torch(module, reference, torch.randn(4, 2, 5))


def test_projections_and_lengths_float64_gradcheck_of_the_scan():
    torch.manual_seed(4)
    module = rnnfast.LSTM(3, 4, bidirectional=True, proj_size=2, backend="scan").double()
    names = [name for name, _ in module.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def run(x, h0, c0, *weights):
        out, (h, c) = torch.func.functional_call(module, dict(zip(names, weights)), (x, (h0, c0)), {"lengths": lengths})
        return out, h, c

    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(run, (x, h0, c0, *weights))


@pytest.mark.parametrize(
    "lengths, error, message",
    [
        (torch.tensor([7, 2]), ValueError, "lengths must not exceed the sequence length 6, got 7"),
        (torch.tensor([0, 2]), ValueError, "Length of all samples has to be greater than 0"),
        (torch.tensor([-1, 2]), ValueError, "Length of all samples has to be greater than 0"),
        (torch.tensor([3, 2, 1]), ValueError, "lengths must be a 1-D tensor of 2 sequence lengths, got shape (3,)"),
        (torch.tensor([[3, 2]]), ValueError, "lengths must be a 1-D tensor of 2 sequence lengths, got shape (1, 2)"),
        (torch.tensor([3.0, 2.0]), ValueError, "lengths must be an integer tensor, got torch.float32"),
        (torch.tensor([3, 2], device="meta"), ValueError, "lengths must be on the CPU or on the input's device (cpu)"),
    ],
)
def test_bad_lengths_are_refused(lengths, error, message):
    with pytest.raises(error) as raised:
        rnnfast.GRU(3, 4)(torch.randn(6, 2, 3), lengths=lengths)
    assert message in str(raised.value)


def test_lengths_need_batched_input_and_no_packing():
    with pytest.raises(ValueError, match="lengths= needs batched 3-D input"):
        rnnfast.LSTM(3, 4)(torch.randn(6, 3), lengths=torch.tensor([6]))
    packed = pack_padded_sequence(torch.randn(6, 2, 3), torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="cannot be combined with PackedSequence"):
        rnnfast.LSTM(3, 4)(packed, lengths=torch.tensor([6, 2]))


@pytest.mark.parametrize("proj_size", [4, 5, -1])
def test_bad_proj_size_is_refused_like_torch_nn(proj_size):
    with pytest.raises(ValueError) as expected:
        nn.LSTM(3, 4, proj_size=proj_size)
    with pytest.raises(ValueError) as raised:
        rnnfast.LSTM(3, 4, proj_size=proj_size)
    assert str(raised.value) == str(expected.value)
