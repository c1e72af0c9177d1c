"""The scan written with plain differentiable torch ops, step by step: what the custom op's backward
runs when autograd needs a graph of the backward itself (create_graph=True: gradient penalties,
double backward, gradgradcheck). Slow and memory-hungry by design; first-order training never uses it.

Same contract as ops._scan_impl: gates = x W_ih^T + input bias (+ first_gates at each row's first
step), rows past their length carry their state, and the result is the state slots h_all [T + 1, B, H]
(h_init in the first read slot) and, for the LSTM, c_n.
"""

import torch

from .pytorch_scan import state_dtype


def scan_slots(cell, reverse, x, lengths, h_init, c0, w_ih, w_rec, b_ih, b_hh, first_gates, first_steps):
    """(h_all [T + 1, B, H], c_n [B, H] for the LSTM else empty); first_steps indexes (t, b) of each
    row's first step, where first_gates [B, G*H] (or None) is added."""
    seq_len = x.shape[0]
    compute_dtype = state_dtype(x.dtype)
    if cell == "gru":
        input_bias, b_rec = b_ih, b_hh
    else:
        input_bias, b_rec = (None if b_ih is None else b_ih + b_hh), None
    gates = x @ w_ih.t()
    if input_bias is not None:
        gates = gates + input_bias
    if first_gates is not None:
        gates = gates.index_put(first_steps, first_gates, accumulate=True)
    h, c = h_init, None if c0 is None else c0.to(compute_dtype)
    slots = [h_init]
    for step in range(seq_len):
        t = seq_len - 1 - step if reverse else step
        recurrent = h.to(compute_dtype) @ w_rec.t().to(compute_dtype)
        pre = gates[t].to(compute_dtype)
        if cell == "lstm":
            gate_i, gate_f, gate_g, gate_o = (pre + recurrent).chunk(4, dim=1)
            c_new = torch.sigmoid(gate_f) * c + torch.sigmoid(gate_i) * torch.tanh(gate_g)
            h_new = torch.sigmoid(gate_o) * torch.tanh(c_new)
        elif cell == "gru":
            if b_rec is not None:
                recurrent = recurrent + b_rec.to(compute_dtype)
            x_r, x_z, x_n = pre.chunk(3, dim=1)
            h_r, h_z, h_n = recurrent.chunk(3, dim=1)
            gate_r, gate_z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            gate_n = torch.tanh(x_n + gate_r * h_n)
            h_new = (1 - gate_z) * gate_n + gate_z * h.to(compute_dtype)
        else:
            h_new = torch.relu(pre + recurrent) if cell == "rnn_relu" else torch.tanh(pre + recurrent)
        h_new = h_new.to(x.dtype)
        if lengths is not None:
            active = (t < lengths).unsqueeze(1)
            h_new = torch.where(active, h_new, h)
            if c is not None:
                c_new = torch.where(active, c_new, c)
        h = h_new
        if cell == "lstm":
            c = c_new
        slots.append(h)
    if reverse:
        slots.reverse()
    c_n = c.to(x.dtype) if cell == "lstm" else x.new_empty(0)
    return torch.stack(slots), c_n
