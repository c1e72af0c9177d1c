"""torch's own recurrent kernels, called exactly as torch.nn calls them: the NATIVE path of rnnfast.dispatch
(which decides when it runs)."""

import torch

LAYERS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh, "rnn_relu": torch._VF.rnn_relu}
CELLS = {
    "lstm": torch._VF.lstm_cell,
    "gru": torch._VF.gru_cell,
    "rnn_tanh": torch._VF.rnn_tanh_cell,
    "rnn_relu": torch._VF.rnn_relu_cell,
}


def run_layers(
    cell: str,
    x: torch.Tensor,
    batch_sizes: torch.Tensor | None,
    hidden: tuple[torch.Tensor, ...],
    weights: list[torch.Tensor],
    has_bias: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """torch.nn's own call of its layer kernel: x padded (batch_sizes None) or the data of a sorted
    PackedSequence; hidden (h0, c0) or (h0,) in the batch's order; weights in torch.nn's _flat_weights
    order. Returns (output, final states), with torch.nn's dropout between layers when `train`."""
    hx = hidden if cell == "lstm" else hidden[0]
    layer = LAYERS[cell]
    if batch_sizes is None:
        result = layer(x, hx, weights, has_bias, num_layers, dropout, train, bidirectional, batch_first)
    else:
        result = layer(x, batch_sizes, hx, weights, has_bias, num_layers, dropout, train, bidirectional)
    return result[0], tuple(result[1:])


def run_cell(
    cell: str, x: torch.Tensor, hidden: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, ...]:
    """torch.nn's own call of its cell op on batched x [B, I]: (h', c') for the LSTM, (h',) otherwise."""
    if cell == "lstm":
        return tuple(CELLS[cell](x, hidden, *weights))
    return (CELLS[cell](x, hidden[0], *weights),)
