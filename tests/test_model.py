"""bench/model.py: the latency model's arithmetic by hand, and torch.nn's cuDNN algorithm choice on known
cases of aten/src/ATen/native/cudnn/RNN.cpp's get_algo."""

import math

import pytest

from bench import model

H100 = model.GPUS["h100"]


def work(**changes) -> model.PassWork:
    values = dict(
        programs=1, launches=1, barriers_per_step=0, tiles_per_step=1, chunks_per_step=0,
        l2_round_trips_per_step=0, l2_bytes_per_step=0, shared_bytes_per_step=0, dot_flops_per_step=0,
        mma_chain_per_step=0, k_split_sums_per_step=0, tensor_cores=True,
    )  # fmt: skip
    return model.PassWork(**{**values, **changes})


def test_model_step_of_one_program_by_hand():
    w = work(l2_round_trips_per_step=10, chunks_per_step=10, tiles_per_step=2, dot_flops_per_step=4096 * 100)
    cycles = 10 * H100.l2_latency_cycles + 10 * model.CHUNK_CYCLES + 2 * model.TILE_CYCLES + 100
    assert model.step_seconds(w, H100) == pytest.approx(cycles / H100.clock_hz)
    fma = work(dot_flops_per_step=256 * 100, tensor_cores=False)
    assert model.step_seconds(fma, H100) == pytest.approx((model.TILE_CYCLES + 100) / H100.clock_hz)
    shared = work(tiles_per_step=0, shared_bytes_per_step=128 * 50)
    assert model.step_seconds(shared, H100) == pytest.approx(50 / H100.clock_hz)


def test_model_dot_is_its_mma_chain_or_its_flops():
    # 48 dependent MMAs take longer than the tensor cores need for the FLOPs; split four ways across
    # warps they take 12, plus one sum of the partial products.
    chained = work(tiles_per_step=0, mma_chain_per_step=48, dot_flops_per_step=4096 * 100)
    assert model.step_seconds(chained, H100) == pytest.approx(48 * model.MMA_LATENCY_CYCLES / H100.clock_hz)
    split = work(tiles_per_step=0, mma_chain_per_step=12, k_split_sums_per_step=1, dot_flops_per_step=4096 * 100)
    cycles = 12 * model.MMA_LATENCY_CYCLES + model.CHUNK_CYCLES
    assert model.step_seconds(split, H100) == pytest.approx(cycles / H100.clock_hz)
    wide = work(tiles_per_step=0, mma_chain_per_step=1, dot_flops_per_step=4096 * 100)
    assert model.step_seconds(wide, H100) == pytest.approx(100 / H100.clock_hz)


def test_model_waves_bandwidth_and_barriers():
    one_wave = model.step_seconds(work(programs=H100.sm_count, l2_round_trips_per_step=20), H100)
    two_waves = model.step_seconds(work(programs=H100.sm_count + 1, l2_round_trips_per_step=20), H100)
    assert two_waves == pytest.approx(2 * one_wave)
    # 100 programs reading 1 MB each per step: the L2 bandwidth, not latency, sets the step.
    busy = work(programs=100, l2_bytes_per_step=2**20)
    assert model.step_seconds(busy, H100) == pytest.approx(100 * 2**20 / H100.l2_bytes_per_s)
    barrier = work(barriers_per_step=2)
    assert model.step_seconds(barrier, H100) - model.step_seconds(work(), H100) == pytest.approx(2 * model.BARRIER_S)


def test_model_launches():
    fast, slow = work(), work(l2_round_trips_per_step=1000)
    step_fast, step_slow = model.step_seconds(fast, H100), model.step_seconds(slow, H100)
    assert step_fast + model.KERNEL_GAP_S < model.LAUNCH_S < step_slow
    assert model.pass_seconds(fast, 1000, H100) == pytest.approx(model.LAUNCH_S + 1000 * step_fast)
    # One launch per step: bound by issuing launches, or by the step when it is longer.
    per_step = work(launches=1000)
    assert model.pass_seconds(per_step, 1000, H100) == pytest.approx(1000 * model.LAUNCH_S)
    per_step_slow = work(launches=1000, l2_round_trips_per_step=1000)
    assert model.pass_seconds(per_step_slow, 1000, H100) == pytest.approx(1000 * (step_slow + model.KERNEL_GAP_S))


def test_model_gemm_and_layer():
    m, n, k = 16384, 3072, 768
    peak = H100.tensor_flops_per_cycle_per_sm * H100.sm_count * H100.clock_hz
    assert model.gemm_seconds(m, n, k, 2, H100) == pytest.approx(2 * m * n * k / (peak * model.GEMM_EFFICIENCY))
    tiny = model.gemm_seconds(1, 1, 1 << 20, 2, H100)  # a dot product is memory-bound
    assert tiny == pytest.approx(((1 << 20) * 2 + 2) * 2 / H100.hbm_bytes_per_s)
    forward, backward = work(), work(l2_round_trips_per_step=10)
    forward_ms, total_ms = model.layer_ms(forward, backward, 4, 1024, 16, 768, 2, "h100")
    projection = model.gemm_seconds(1024 * 16, 4 * 768, 768, 2, H100)
    assert forward_ms == pytest.approx(1e3 * (projection + model.pass_seconds(forward, 1024, H100)))
    backward_ms = 1e3 * (3 * projection + model.pass_seconds(backward, 1024, H100))
    assert total_ms == pytest.approx(forward_ms + backward_ms)
    assert math.isfinite(total_ms)


@pytest.mark.parametrize(
    "cell,dtype,hidden,batch,options,forward,backward",
    [
        # The published anchor, B16 T1024 H768 fp16 LSTM: persistent, both passes.
        ("lstm", "fp16", 768, 16, {}, "PERSIST_STATIC", "PERSIST_STATIC"),
        ("lstm", "fp16", 128, 16, {}, "PERSIST_STATIC_SMALL_H", "PERSIST_STATIC_SMALL_H"),
        # Forward small-H limit 192, backward 128; 192 is not a multiple of 128.
        ("lstm", "fp16", 192, 16, {}, "PERSIST_STATIC_SMALL_H", "STANDARD"),
        ("lstm", "fp16", 256, 16, {}, "PERSIST_STATIC", "PERSIST_STATIC"),
        ("lstm", "bf16", 192, 16, {}, "PERSIST_STATIC_SMALL_H", "STANDARD"),
        ("lstm", "bf16", 768, 16, {}, "STANDARD", "STANDARD"),
        ("lstm", "fp32", 768, 16, {}, "STANDARD", "STANDARD"),
        ("lstm", "fp64", 64, 16, {}, "STANDARD", "STANDARD"),
        ("lstm", "fp16", 768, 12, {}, "STANDARD", "STANDARD"),  # batch not a multiple of 8
        ("lstm", "fp16", 768, 136, {}, "STANDARD", "STANDARD"),  # batch over 128
        ("lstm", "fp16", 768, 128, {}, "PERSIST_STATIC", "PERSIST_STATIC"),
        ("lstm", "fp16", 1152, 16, {}, "STANDARD", "STANDARD"),  # H over 1024
        ("lstm", "fp16", 768, 16, {"input_size": 100}, "STANDARD", "STANDARD"),
        ("lstm", "fp16", 768, 16, {"bidirectional": True}, "STANDARD", "STANDARD"),
        ("lstm", "fp16", 128, 16, {"bidirectional": True}, "PERSIST_STATIC_SMALL_H", "PERSIST_STATIC_SMALL_H"),
        ("lstm", "fp16", 768, 16, {"num_layers": 2}, "STANDARD", "STANDARD"),
        ("lstm", "fp16", 64, 16, {"proj_size": 32}, "STANDARD", "STANDARD"),
        ("lstm", "fp16", 64, 16, {"packed": True}, "STANDARD", "STANDARD"),
        ("gru", "fp16", 768, 16, {}, "STANDARD", "STANDARD"),  # never persistent above small H
        ("gru", "fp16", 192, 16, {}, "PERSIST_STATIC_SMALL_H", "STANDARD"),
        ("rnn_tanh", "fp32", 384, 16, {}, "PERSIST_STATIC_SMALL_H", "STANDARD"),
        ("rnn_tanh", "fp16", 384, 16, {}, "PERSIST_STATIC_SMALL_H", "PERSIST_STATIC"),
        ("rnn_relu", "fp16", 256, 16, {}, "PERSIST_STATIC_SMALL_H", "PERSIST_STATIC_SMALL_H"),
        # Elman RNNs skip persistence at batch >= 96 with H >= 896.
        ("rnn_relu", "fp16", 896, 96, {}, "STANDARD", "STANDARD"),
        ("rnn_relu", "fp16", 896, 88, {}, "PERSIST_STATIC", "PERSIST_STATIC"),
        ("lstm", "fp16", 896, 96, {}, "PERSIST_STATIC", "PERSIST_STATIC"),
    ],
)
def test_model_cudnn_algorithm(cell, dtype, hidden, batch, options, forward, backward):
    options = {"input_size": hidden, **options}
    assert model.cudnn_algorithm(cell, dtype, hidden, batch, forward=True, **options) == forward
    assert model.cudnn_algorithm(cell, dtype, hidden, batch, forward=False, **options) == backward


def test_cudnn_standard_floor_by_hand():
    """Two dependent kernels per step and direction, the GEMM's W_hh read from L2 on top (both directions
    at once), and the GEMMs around the scan: LSTM B16 T1024 H768 fp16, bidirectional, on an H100."""
    weights = 2 * 4 * 768 * 768 * 2
    step = 2 * model.STANDARD_KERNEL_MIN_S + weights / H100.l2_bytes_per_s
    projection = model.gemm_seconds(1024 * 16, 2 * 4 * 768, 768, 2, H100)
    forward, total = model.cudnn_standard_floor_ms(4, 1024, 16, 768, 2, "h100", directions=2)
    assert forward == pytest.approx((projection + 1024 * step) * 1e3)
    assert total == pytest.approx((4 * projection + 2 * 1024 * step) * 1e3)
