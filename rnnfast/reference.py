"""Pure-PyTorch recurrences: the CPU fallback and the readable specification of each cell.

Each function has the same signature and buffer conventions as its Triton twin in rnnfast.kernels (see
kernels/lstm.py for the slot layout of h_all, c_all and dgates_all), so functional.py can call either.
The input projection and the weight gradients are GEMMs done by functional.py; only the step-by-step
part lives here. Gate math runs in the state dtype (fp32, or fp64 for fp64 tensors).
"""

import torch


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the cell state and of gradient accumulation for tensors of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def lstm_scan_fwd(
    gates: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, c_all: torch.Tensor, reverse: bool, training: bool
) -> None:
    seq_len, hidden = h_all.shape[0] - 1, h_all.shape[2]
    c_slots = c_all.shape[0]
    compute_dtype = c_all.dtype
    w_hh_t = w_hh.t().to(compute_dtype)
    for step in range(seq_len):
        t = seq_len - 1 - step if reverse else step
        read_slot, write_slot = (t + 1, t) if reverse else (t, t + 1)
        # In place into gates[t] when it is already in the compute dtype: it becomes the saved activations.
        pre = gates[t].to(compute_dtype).addmm_(h_all[read_slot].to(compute_dtype), w_hh_t)
        torch.sigmoid_(pre[:, : 2 * hidden])
        torch.tanh_(pre[:, 2 * hidden : 3 * hidden])
        torch.sigmoid_(pre[:, 3 * hidden :])
        gate_i, gate_f, gate_g, gate_o = pre.chunk(4, dim=1)
        c = torch.addcmul(gate_f * c_all[read_slot % c_slots], gate_i, gate_g, out=c_all[write_slot % c_slots])
        h_all[write_slot] = gate_o * torch.tanh(c)
        if training and pre.data_ptr() != gates[t].data_ptr():
            gates[t] = pre


def lstm_scan_bwd(
    dgates_all: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    c_all: torch.Tensor,
    dh: torch.Tensor,
    dc: torch.Tensor,
    reverse: bool,
) -> None:
    seq_len, batch, hidden = dh.shape
    compute_dtype = c_all.dtype
    w_hh = w_hh.to(compute_dtype)
    gate_i, gate_f, gate_g, gate_o = gates.to(compute_dtype).chunk(4, dim=2)
    c, c_prev = (c_all[:seq_len], c_all[1:]) if reverse else (c_all[1:], c_all[:seq_len])

    # Everything that does not depend on the incoming gradient, for all steps at once.
    tanh_c = torch.tanh(c)
    dc_per_dh = gate_o * (1 - tanh_c * tanh_c)
    do_per_dh = tanh_c * gate_o * (1 - gate_o)
    difg_per_dc = torch.stack(
        (gate_g * gate_i * (1 - gate_i), c_prev * gate_f * (1 - gate_f), gate_i * (1 - gate_g * gate_g)), dim=2
    )  # [T, B, 3, H]

    same_dtype = dgates_all.dtype == compute_dtype
    work = dgates_all if same_dtype else torch.empty_like(dgates_all, dtype=compute_dtype)
    work[0 if reverse else seq_len].zero_()
    for step in range(seq_len):
        t = step if reverse else seq_len - 1 - step
        slot, next_slot = (t + 1, t) if reverse else (t, t + 1)
        dh_t = torch.addmm(dh[t], work[next_slot], w_hh)
        dc.addcmul_(dh_t, dc_per_dh[t])
        dgates_t = work[slot].view(batch, 4, hidden)
        torch.mul(difg_per_dc[t], dc.unsqueeze(1), out=dgates_t[:, :3])
        torch.mul(dh_t, do_per_dh[t], out=dgates_t[:, 3])
        dc.mul_(gate_f[t])
    if not same_dtype:
        dgates_all.copy_(work)
