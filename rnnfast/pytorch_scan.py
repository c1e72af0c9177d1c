"""rnnfast's scan in plain PyTorch ops (the SCAN path of rnnfast.dispatch): what CPU training runs where
it beats torch's own kernels, and the readable specification of each cell.

Each public function has the same signature and buffer conventions as its Triton twin in rnnfast.kernels
(see rnnfast/kernels/lstm.py for the slot layout of h_all, c_all and dgates_all, and their leading
direction axis D), so rnnfast/ops.py can call either. Here each is written for one direction and run once
per direction (`_over_directions`).
The input projection and the weight gradients are GEMMs done by rnnfast/ops.py; only the step-by-step
part lives here. Gate math runs in the state dtype (fp32, or fp64 for fp64 tensors); gate gradients
(dgates_*) are in the state dtype too, their zero slot already cleared.

lengths [B] (int64, or None for an unpadded batch): at time t a row is active while t < its length.
Inactive rows carry their state through unchanged, and in the backward their gate gradients are zero
while the gradient reaching their state is carried along in dh_carry. Steps before the shortest length
have every row active and run unmasked. The recurrent matmul of a step runs on the rows up to its last
active one only (`_active_rows`): past them the result is masked out, or the gradient rows are exact zeros.
ops.scan orders a batch by decreasing length for this path, so those rows are the active ones and
variable-length batches cost the matmuls of their valid steps, as torch's packed kernels do.

On CPU each step costs a few microseconds per op whatever the size, so the loops keep ops per step few:
per-step views come from one unbind() before the loop, and results are written in place into the slots
they belong in.
"""

import torch


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the cell state and of gradient accumulation for tensors of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _over_directions(scan):
    """scan(*buffers, lengths, reverse, *flags), written for one direction's buffers, as a function of
    buffers with a leading direction axis D (direction 1 the reverse one), without `reverse`."""
    names = list(scan.__code__.co_varnames[: scan.__code__.co_argcount])
    n_buffers = names.index("lengths")

    def over_directions(*args):
        buffers, lengths, flags = args[:n_buffers], args[n_buffers], args[n_buffers + 1 :]
        for direction in range(buffers[0].shape[0]):
            scan(*(buffer[direction] for buffer in buffers), lengths, direction == 1, *flags)

    over_directions.__name__ = scan.__name__
    return over_directions


def _unmasked_steps(lengths: torch.Tensor | None, seq_len: int) -> int:
    """Steps t < this have every row active (no masking needed)."""
    if lengths is None:
        return seq_len
    return int(lengths.min()) if lengths.numel() else seq_len


# A step's matmul skips the rows past its last active one only where they hold at least this many
# elements of h (rows x hidden): below it the extra ops per step cost more than the rows they skip (CPU,
# 2 threads: variable-length training at B16 T50 H64 took 5-30 % longer skipping rows, B64 T100 H256
# 4-13 % less; an A/B of the two versions of this file, one process each, alternating, not part of bench).
MIN_SKIPPED_ELEMENTS = 4096


def _active_rows(lengths: torch.Tensor | None, batch: int, hidden: int, seq_len: int) -> list[int]:
    """Per time step t, how many leading rows a step's recurrent matmul runs on: every row active at t
    (length > t) is among them. All rows without lengths, or where skipping the rest would save less
    than MIN_SKIPPED_ELEMENTS."""
    if lengths is None or batch == 0:
        return [batch] * seq_len
    active = lengths.unsqueeze(0) > torch.arange(seq_len, device=lengths.device).unsqueeze(1)  # [T, B]
    last = (active * torch.arange(1, batch + 1, device=lengths.device)).amax(dim=1).tolist()
    return [rows if (batch - rows) * hidden >= MIN_SKIPPED_ELEMENTS else batch for rows in last]


def _leading(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """The first `rows` rows of `tensor` (itself when that is all of them: no view to make)."""
    return tensor if rows == tensor.shape[0] else tensor[:rows]


def _rows_after(rows: list[int], t: int, reverse: bool) -> int:
    """Rows of the gate gradients of the step the backward processed before step t (t + 1, or t - 1 in
    reverse) that can be nonzero: a backward step's recurrent matmul needs no more."""
    before = t - 1 if reverse else t + 1
    return rows[before] if 0 <= before < len(rows) else 0


def _slots(step: int, seq_len: int, reverse: bool) -> tuple[int, int, int]:
    """(t, slot read, slot written) of the forward's `step`-th step."""
    t = seq_len - 1 - step if reverse else step
    return (t, t + 1, t) if reverse else (t, t, t + 1)


def _backward_slots(step: int, seq_len: int, reverse: bool) -> tuple[int, int, int]:
    """(t, slot of t's gate gradients, slot of those of the step processed before it) of the backward's
    `step`-th step: the forward's steps in the opposite order, t's gate gradients in the slot the forward
    read h_{t-1} from, the later step's in the slot it wrote h_t to."""
    return _slots(seq_len - 1 - step, seq_len, reverse)


def _carry(dh_steps, dh_carry: torch.Tensor, carried: torch.Tensor, step: int, t: int, reverse: bool) -> None:
    """Adds the gradient that reaches h_{t-1} without going through W_hh (GRU's z path, the state an
    inactive row carries) to the next step's dh (dh is the backward's own copy), or, after the last
    step, stores it in dh_carry."""
    if step + 1 < len(dh_steps):
        dh_steps[t + 1 if reverse else t - 1].add_(carried)
    else:
        dh_carry.copy_(carried)


def _recurrent_gradient(dh_t, dgates_next, w_hh, rows: list[int], t: int, reverse: bool) -> torch.Tensor:
    """dh_t + dgates_next @ w_hh, the matmul on the rows where dgates_next can be nonzero."""
    n = _rows_after(rows, t, reverse)
    if n == dh_t.shape[0]:
        return torch.addmm(dh_t, dgates_next, w_hh)
    result = dh_t.clone()
    result[:n].addmm_(dgates_next[:n], w_hh)
    return result


@_over_directions
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
    in_place = gates.dtype == compute_dtype  # gates[t] then becomes the saved activations itself
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, h_all.shape[1], h_all.shape[2], seq_len)
    gate_steps, h_steps, c_steps = gates.unbind(0), h_all.unbind(0), c_all.unbind(0)
    for step in range(seq_len):
        t, read_slot, write_slot = _slots(step, seq_len, reverse)
        h_prev = h_steps[read_slot].to(compute_dtype)
        pre = gate_steps[t] if in_place else gate_steps[t].to(compute_dtype)
        _leading(pre, rows[t]).addmm_(_leading(h_prev, rows[t]), w_hh_t)
        torch.sigmoid_(pre[:, : 2 * hidden])
        gate_i, gate_f, gate_g, gate_o = pre.chunk(4, dim=1)
        torch.tanh_(gate_g)
        torch.sigmoid_(gate_o)
        c_prev, c = c_steps[read_slot % c_slots], c_steps[write_slot % c_slots]
        torch.mul(gate_f, c_prev, out=c).addcmul_(gate_i, gate_g)
        if t < unmasked and h_all.dtype == compute_dtype:
            torch.mul(gate_o, torch.tanh(c), out=h_steps[write_slot])
        elif t < unmasked:
            h_steps[write_slot].copy_(gate_o * torch.tanh(c))
        else:
            active = (t < lengths).unsqueeze(1)
            h_steps[write_slot].copy_(torch.where(active, gate_o * torch.tanh(c), h_prev))
            c.copy_(torch.where(active, c, c_prev))
        if training and not in_place:
            gate_steps[t].copy_(pre)


@_over_directions
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
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, batch, hidden, seq_len)

    # Everything that does not depend on the incoming gradient, for all steps at once.
    tanh_c = torch.tanh(c)
    dc_per_dh = (gate_o * (1 - tanh_c * tanh_c)).unbind(0)
    do_per_dh = (tanh_c * gate_o * (1 - gate_o)).unbind(0)
    difg_per_dc = torch.stack(
        (gate_g * gate_i * (1 - gate_i), c_prev * gate_f * (1 - gate_f), gate_i * (1 - gate_g * gate_g)), dim=2
    ).unbind(0)  # T x [B, 3, H]
    dgates_steps = dgates_all.view(seq_len + 1, batch, 4, hidden).unbind(0)
    dh_steps, gate_f = dh.unbind(0), gate_f.unbind(0)

    for step in range(seq_len):
        t, slot, next_slot = _backward_slots(step, seq_len, reverse)
        dh_t = _recurrent_gradient(dh_steps[t], dgates_steps[next_slot].view(batch, 4 * hidden), w_hh, rows, t, reverse)
        dc_t = torch.addcmul(dc, dh_t, dc_per_dh[t])
        dgates_t = dgates_steps[slot]
        torch.mul(difg_per_dc[t], dc_t.unsqueeze(1), out=dgates_t[:, :3])
        torch.mul(dh_t, do_per_dh[t], out=dgates_t[:, 3])
        if t < unmasked:
            torch.mul(dc_t, gate_f[t], out=dc)
        else:
            active = (t < lengths).unsqueeze(1)
            dgates_t.mul_(active.unsqueeze(2))
            dc.copy_(torch.where(active, dc_t * gate_f[t], dc))
            _carry(dh_steps, dh_carry, torch.where(active, 0, dh_t), step, t, reverse)


@_over_directions
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
    seq_len, batch, hidden = h_all.shape[0] - 1, h_all.shape[1], h_all.shape[2]
    compute_dtype = state_dtype(gates.dtype)
    w_hh_t = w_hh.t().to(compute_dtype)
    b_hh = b_hh.to(compute_dtype)
    in_place = gates.dtype == compute_dtype  # gates[t] then becomes the saved activations itself
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, batch, hidden, seq_len)
    # W_hh h + b_hh of one step; rows past the step's active ones keep finite values, masked out below.
    recurrent = gates.new_zeros(batch, 3 * hidden, dtype=compute_dtype)
    recurrent_rz, recurrent_n = recurrent[:, : 2 * hidden], recurrent[:, 2 * hidden :]
    gate_steps, h_steps, hn_steps = gates.unbind(0), h_all.unbind(0), hn_all.unbind(0)
    for step in range(seq_len):
        t, read_slot, write_slot = _slots(step, seq_len, reverse)
        h_prev = h_steps[read_slot].to(compute_dtype)
        torch.addmm(b_hh, _leading(h_prev, rows[t]), w_hh_t, out=_leading(recurrent, rows[t]))
        act = gate_steps[t] if in_place else gate_steps[t].to(compute_dtype)
        act[:, : 2 * hidden].add_(recurrent_rz).sigmoid_()
        gate_r, gate_z, gate_n = act.chunk(3, dim=1)
        gate_n.addcmul_(gate_r, recurrent_n).tanh_()
        if t < unmasked and h_all.dtype == compute_dtype:
            torch.lerp(gate_n, h_prev, gate_z, out=h_steps[write_slot])
        else:
            h = torch.lerp(gate_n, h_prev, gate_z)
            h_steps[write_slot].copy_(h if t < unmasked else torch.where((t < lengths).unsqueeze(1), h, h_prev))
        if training:
            hn_steps[t].copy_(recurrent_n)
            if not in_place:
                gate_steps[t].copy_(act)


@_over_directions
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
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, batch, hidden, seq_len)

    # Everything that does not depend on the incoming gradient, for all steps at once.
    dn_per_dh = ((1 - gate_z) * (1 - gate_n * gate_n)).unbind(0)
    dz_per_dh = ((h_prev - gate_n) * gate_z * (1 - gate_z)).unbind(0)
    dr_per_dn = (hn_all * gate_r * (1 - gate_r)).unbind(0)
    gate_r, gate_z = gate_r.unbind(0), gate_z.unbind(0)
    # r and z get the same gradient through the input and through h: written once into dgates_h_all,
    # copied to dgates_x in one go after the loop; n's differ (W_hn h sits inside r * (...)).
    dgates_h_steps = dgates_h_all.view(seq_len + 1, batch, 3, hidden).unbind(0)
    dn_x_steps, dh_steps = dgates_x[:, :, 2 * hidden :].unbind(0), dh.unbind(0)

    for step in range(seq_len):
        t, slot, next_slot = _backward_slots(step, seq_len, reverse)
        # The part of dh[t] that skips W_hh (through z, and past padding) was added in by the step before.
        dh_t = _recurrent_gradient(
            dh_steps[t], dgates_h_steps[next_slot].view(batch, 3 * hidden), w_hh, rows, t, reverse
        )
        d_n, (d_r, d_z, d_n_h) = dn_x_steps[t], dgates_h_steps[slot].unbind(1)
        torch.mul(dh_t, dn_per_dh[t], out=d_n)
        torch.mul(dh_t, dz_per_dh[t], out=d_z)
        carried = dh_t * gate_z[t]
        if t >= unmasked:
            active = (t < lengths).unsqueeze(1)
            d_n.mul_(active)
            d_z.mul_(active)
            carried = torch.where(active, carried, dh_t)
        torch.mul(d_n, dr_per_dn[t], out=d_r)
        torch.mul(d_n, gate_r[t], out=d_n_h)
        _carry(dh_steps, dh_carry, carried, step, t, reverse)
    dgates_h = dgates_h_all[1:] if reverse else dgates_h_all[:seq_len]
    dgates_x[:, :, : 2 * hidden] = dgates_h[:, :, : 2 * hidden]


@_over_directions
def rnn_scan_fwd(
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
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, h_all.shape[1], h_all.shape[2], seq_len)
    gate_steps, h_steps = gates.unbind(0), h_all.unbind(0)
    for step in range(seq_len):
        t, read_slot, write_slot = _slots(step, seq_len, reverse)
        h_prev = h_steps[read_slot].to(compute_dtype)
        if t < unmasked and h_all.dtype == compute_dtype:
            activation(torch.addmm(gate_steps[t], h_prev, w_hh_t, out=h_steps[write_slot]))
            continue
        h = gate_steps[t].to(compute_dtype, copy=True)
        _leading(h, rows[t]).addmm_(_leading(h_prev, rows[t]), w_hh_t)
        activation(h)
        h_steps[write_slot].copy_(h if t < unmasked else torch.where((t < lengths).unsqueeze(1), h, h_prev))


@_over_directions
def rnn_scan_bwd(
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
    d_pre_per_dh = ((h > 0).to(compute_dtype) if relu else 1 - h * h).unbind(0)
    unmasked = _unmasked_steps(lengths, seq_len)
    rows = _active_rows(lengths, dh.shape[1], dh.shape[2], seq_len)
    dgates_steps, dh_steps = dgates_all.unbind(0), dh.unbind(0)

    for step in range(seq_len):
        t, slot, next_slot = _backward_slots(step, seq_len, reverse)
        dh_t = _recurrent_gradient(dh_steps[t], dgates_steps[next_slot], w_hh, rows, t, reverse)
        if t < unmasked:
            torch.mul(dh_t, d_pre_per_dh[t], out=dgates_steps[slot])
        else:
            active = (t < lengths).unsqueeze(1)
            torch.mul(dh_t, d_pre_per_dh[t] * active, out=dgates_steps[slot])
            _carry(dh_steps, dh_carry, torch.where(active, 0, dh_t), step, t, reverse)
