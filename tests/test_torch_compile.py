"""torch.compile(fullgraph=True) and torch.export of models with rnnfast layers (the scan is a custom op
with registered autograd and fake implementations, so Dynamo neither breaks the graph nor traces the
time loop). torch.nn's own RNN modules graph-break under Dynamo."""

import pytest
import torch
from torch import nn

import rnnfast
from tests.oracle import assert_matches


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnnfast.LSTM(4, 6, bidirectional=True, batch_first=True, backend="scan")
        self.gru = rnnfast.GRU(12, 5, backend="scan", batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x, lengths):
        hidden, _ = self.lstm(x, lengths=lengths)
        hidden, h_n = self.gru(hidden)
        return self.head(hidden).sum(1) + h_n[0].sum(1, keepdim=True)


@pytest.mark.parametrize("compiler", ["inductor", "aot_eager"])
def test_fullgraph_compile_matches_eager_outputs_and_gradients(compiler):
    torch.manual_seed(0)
    model = Tagger()
    x = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 4])
    compiled = torch.compile(model, fullgraph=True, backend=compiler)

    expected = model(x, lengths)
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    actual = compiled(x, lengths)
    actual_grads = torch.autograd.grad(actual.sum(), list(model.parameters()))
    assert_matches(actual, expected, torch.float32, "fp32 result")
    for mine, theirs in zip(actual_grads, expected_grads):
        assert_matches(mine, theirs, torch.float32, "fp32 result")


def test_export_of_an_inference_model():
    torch.manual_seed(1)
    model = Tagger().eval()
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        exported = torch.export.export(model, (x, lengths))
        torch.testing.assert_close(exported.module()(x, lengths), model(x, lengths))
    assert any("rnnfast.scan" in str(node.target) for node in exported.graph.nodes)
