"""torch's own recurrent kernels, and when rnnfast's default backend runs them instead of its PyTorch scan.

On CPU, backend="auto" picks per call whichever of the two is faster, by fixed rules measured with
`python -m bench --dispatch` (torch.nn against rnnfast-torch; AMD EPYC, 2 cores, torch 2.13; never by
timing at run time). Both give torch.nn's results. What the measurements showed:

- Inference: torch's C++ loops (oneDNN's fused LSTM, the generic GRU/Elman loop, the packed loop for
  variable lengths) pay less per step than the scan's Python loop: native as fast or faster everywhere
  (LSTM 2-12x, GRU and RNN 1.0-2x, packed 1.1-3x), within noise at worst (a few RNN shapes).
- LSTM training, fixed lengths: oneDNN's LSTM has a fused backward: 2-12x faster than the scan (fp32 and
  bf16; float64 and proj_size, which run torch's generic loop, within 0.8-1.3x).
- GRU and RNN training, and every cell trained on variable lengths: torch's CPU kernels record every op
  of every step for autograd and replay them backwards, so the scan with its own backward wins: 0.14-0.9x
  of torch.nn (GRU B1 T100 H256: 0.14x), LSTM packed 0.6-0.9x. Except the GRU on fixed lengths from batch
  128 (and batch x hidden 8192) on: `python -m bench --dispatch --cell gru --mode forward+backward --threads
  2 --provider torch.nn --provider rnnfast-torch --provider rnnfast`, six runs on a quiet machine
  (2026-11-29), gave the scan 1.10 / 1.17 / 1.11 / 1.42 / 1.02 / 0.97x of torch.nn's time at B128 T100 H128
  (noisy, but slower at the median), against 0.95-1.01x at B64 H256, 0.86-0.93x at B64 H128 and B32
  H256, 0.76-0.86x at B32 H128 and 0.88-0.94x at B16 H512
  (one-off runs outside bench swung by up to 30 % between runs at B32-B64, and also put B256 H64 at
  0.89-1.35x). And the GRU on
  variable lengths once batch x hidden reaches 8192: torch's packed loop only multiplies the valid rows,
  and the scan (bidirectional, T100, lengths uniform in T/4..T; one interleaved comparison per shape, 7
  calls each) took 0.68-0.97x of its time below (B8-B64, H64-H256) and 0.95-1.21x from there on (B16 H512
  0.95x, B32 H256-H512 1.05-1.08x, B64 H128-H256 1.13-1.14x, B128 H64 1.05-1.21x).
- Cells (one step): torch's cell ops cost 15-800 us against the one-step scan's 75-4000 us: native.
"""

import torch

LAYERS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh, "rnn_relu": torch._VF.rnn_relu}
CELLS = {
    "lstm": torch._VF.lstm_cell,
    "gru": torch._VF.gru_cell,
    "rnn_tanh": torch._VF.rnn_tanh_cell,
    "rnn_relu": torch._VF.rnn_relu_cell,
}


# GRU training runs torch's own loop from this batch x hidden size on: on variable lengths at any batch,
# on fixed lengths from GRU_FIXED_NATIVE_BATCH rows on (below it the scan is as fast or faster).
GRU_NATIVE_SIZE = 8192
GRU_FIXED_NATIVE_BATCH = 128


def layers_win(cell: str, training: bool, varlen: bool, batch: int, hidden_size: int) -> bool:
    """Whether torch's native layer beats rnnfast's scan on CPU for one call of a `cell` layer stack.

    training: gradients will be needed (grad mode on and an input or weight requires grad);
    varlen: the batch has per-sequence lengths (PackedSequence or lengths=), which the native kernels
    run packed. The dtype and LSTM projections did not change the outcome (see the module's docstring).
    """
    if not training:
        return True
    if cell == "lstm":
        return not varlen
    large = cell == "gru" and batch * hidden_size >= GRU_NATIVE_SIZE
    return large and (varlen or batch >= GRU_FIXED_NATIVE_BATCH)


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


def cell_wins() -> bool:
    """Whether torch's native cell op (one step) beats a one-step rnnfast scan on CPU: always, measured
    from B1 H16 to B64 H256, inference and training (1.3-7x)."""
    return True


def run_cell(
    cell: str, x: torch.Tensor, hidden: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, ...]:
    """torch.nn's own call of its cell op on batched x [B, I]: (h', c') for the LSTM, (h',) otherwise."""
    if cell == "lstm":
        return tuple(CELLS[cell](x, hidden, *weights))
    return (CELLS[cell](x, hidden[0], *weights),)
