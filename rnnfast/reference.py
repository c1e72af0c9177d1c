"""Pure-PyTorch recurrences: the CPU fallback and the readable specification of each cell.

Each function has the same signature and buffer conventions as its Triton twin in rnnfast.kernels (see
kernels/lstm.py for the slot layout of h_all, c_all and dgates_all), so functional.py can call either.
The input projection and the weight gradients are GEMMs done by functional.py; only the step-by-step
part lives here. Gate math runs in the state dtype (fp32, or fp64 for fp64 tensors); gate gradients
(dgates_*) are in the state dtype too, their zero slot already cleared.

lengths [B] (int64, or None for an unpadded batch): at time t a row is active while t < its length.
Inactive rows carry their state through unchanged, and in the backward their gate gradients are zero
while the gradient reaching their state is carried along in dh_carry.
"""

import torch


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the cell state and of gradient accumulation for tensors of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _active(lengths: torch.Tensor | None, t: int) -> torch.Tensor | None:
    return None if lengths is None else (t < lengths).unsqueeze(1)


def lstm_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    c_all: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
    training: bool,
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
        c_prev, c = c_all[read_slot % c_slots], c_all[write_slot % c_slots]
        torch.mul(gate_f, c_prev, out=c).addcmul_(gate_i, gate_g)
        active = _active(lengths, t)
        if active is None and h_all.dtype == compute_dtype:
            torch.mul(gate_o, torch.tanh(c), out=h_all[write_slot])
        elif active is None:
            h_all[write_slot] = gate_o * torch.tanh(c)
        else:
            h_all[write_slot] = torch.where(active, gate_o * torch.tanh(c), h_all[read_slot])
            c.copy_(torch.where(active, c, c_prev))
        if training and pre.data_ptr() != gates[t].data_ptr():
            gates[t] = pre


def lstm_scan_bwd(
    dgates_all: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    c_all: torch.Tensor,
    dh: torch.Tensor,
    dc: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor | None,
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

    for step in range(seq_len):
        t = step if reverse else seq_len - 1 - step
        slot, next_slot = (t + 1, t) if reverse else (t, t + 1)
        dh_in = dh[t] if lengths is None else dh[t] + dh_carry
        dh_t = torch.addmm(dh_in, dgates_all[next_slot], w_hh)
        dc_t = torch.addcmul(dc, dh_t, dc_per_dh[t])
        dgates_t = dgates_all[slot].view(batch, 4, hidden)
        torch.mul(difg_per_dc[t], dc_t.unsqueeze(1), out=dgates_t[:, :3])
        torch.mul(dh_t, do_per_dh[t], out=dgates_t[:, 3])
        active = _active(lengths, t)
        if active is None:
            torch.mul(dc_t, gate_f[t], out=dc)
        else:
            dgates_t.mul_(active.unsqueeze(2))
            dc.copy_(torch.where(active, dc_t * gate_f[t], dc))
            dh_carry.copy_(torch.where(active, 0, dh_t))


def gru_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h_all: torch.Tensor,
    hn_all: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
    training: bool,
) -> None:
    seq_len, hidden = h_all.shape[0] - 1, h_all.shape[2]
    compute_dtype = state_dtype(gates.dtype)
    w_hh_t = w_hh.t().to(compute_dtype)
    b_hh = b_hh.to(compute_dtype)
    for step in range(seq_len):
        t = seq_len - 1 - step if reverse else step
        read_slot, write_slot = (t + 1, t) if reverse else (t, t + 1)
        h_prev = h_all[read_slot].to(compute_dtype)
        recurrent = torch.addmm(b_hh, h_prev, w_hh_t)
        # In place into gates[t] when it is already in the compute dtype: it becomes the saved activations.
        act = gates[t].to(compute_dtype)
        act[:, : 2 * hidden].add_(recurrent[:, : 2 * hidden]).sigmoid_()
        gate_r, gate_z, gate_n = act.chunk(3, dim=1)
        gate_n.addcmul_(gate_r, recurrent[:, 2 * hidden :]).tanh_()
        h = torch.lerp(gate_n, h_prev, gate_z)
        active = _active(lengths, t)
        h_all[write_slot] = h if active is None else torch.where(active, h, h_prev)
        if training:
            hn_all[t] = recurrent[:, 2 * hidden :]
            if act.data_ptr() != gates[t].data_ptr():
                gates[t] = act


def gru_scan_bwd(
    dgates_h_all: torch.Tensor,
    dgates_x: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    hn_all: torch.Tensor,
    dh: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
) -> None:
    seq_len, batch, hidden = dh.shape
    compute_dtype = dh.dtype
    w_hh = w_hh.to(compute_dtype)
    gate_r, gate_z, gate_n = gates.to(compute_dtype).chunk(3, dim=2)
    h_prev = (h_all[1:] if reverse else h_all[:seq_len]).to(compute_dtype)

    # Everything that does not depend on the incoming gradient, for all steps at once.
    dn_per_dh = (1 - gate_z) * (1 - gate_n * gate_n)
    dz_per_dh = (h_prev - gate_n) * gate_z * (1 - gate_z)
    dr_per_dn = hn_all * gate_r * (1 - gate_r)

    for step in range(seq_len):
        t = step if reverse else seq_len - 1 - step
        slot, next_slot = (t + 1, t) if reverse else (t, t + 1)
        dh_t = torch.addmm(dh[t] + dh_carry, dgates_h_all[next_slot], w_hh)
        d_r, d_z, d_n = dgates_x[t].chunk(3, dim=1)
        torch.mul(dh_t, dn_per_dh[t], out=d_n)
        torch.mul(dh_t, dz_per_dh[t], out=d_z)
        active = _active(lengths, t)
        if active is not None:
            d_n.mul_(active)
            d_z.mul_(active)
        torch.mul(d_n, dr_per_dn[t], out=d_r)
        dgates_h_all[slot, :, : 2 * hidden] = dgates_x[t, :, : 2 * hidden]
        torch.mul(d_n, gate_r[t], out=dgates_h_all[slot, :, 2 * hidden :])
        carried = dh_t * gate_z[t]
        dh_carry.copy_(carried if active is None else torch.where(active, carried, dh_t))


def elman_scan_fwd(
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
    relu: bool,
) -> None:
    seq_len = h_all.shape[0] - 1
    compute_dtype = state_dtype(gates.dtype)
    w_hh_t = w_hh.t().to(compute_dtype)
    activation = torch.relu_ if relu else torch.tanh_
    for step in range(seq_len):
        t = seq_len - 1 - step if reverse else step
        read_slot, write_slot = (t + 1, t) if reverse else (t, t + 1)
        h = activation(gates[t].to(compute_dtype).addmm_(h_all[read_slot].to(compute_dtype), w_hh_t))
        active = _active(lengths, t)
        h_all[write_slot] = h if active is None else torch.where(active, h, h_all[read_slot])


def elman_scan_bwd(
    dgates_all: torch.Tensor,
    w_hh: torch.Tensor,
    h_all: torch.Tensor,
    dh: torch.Tensor,
    dh_carry: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
    relu: bool,
) -> None:
    seq_len = dh.shape[0]
    compute_dtype = dh.dtype
    w_hh = w_hh.to(compute_dtype)
    h = (h_all[:seq_len] if reverse else h_all[1:]).to(compute_dtype)
    d_pre_per_dh = (h > 0).to(compute_dtype) if relu else 1 - h * h

    for step in range(seq_len):
        t = step if reverse else seq_len - 1 - step
        slot, next_slot = (t + 1, t) if reverse else (t, t + 1)
        active = _active(lengths, t)
        if active is None:
            dh_t = torch.addmm(dh[t], dgates_all[next_slot], w_hh)
            torch.mul(dh_t, d_pre_per_dh[t], out=dgates_all[slot])
        else:
            dh_t = torch.addmm(dh[t] + dh_carry, dgates_all[next_slot], w_hh)
            torch.mul(dh_t, d_pre_per_dh[t] * active, out=dgates_all[slot])
            dh_carry.copy_(torch.where(active, 0, dh_t))
