"""Every kernel the planner launches compiles for sm_80 and sm_90 within the hardware's limits, compiled as
it is launched: Triton's launcher specialises arguments on their values (integers equal to 1, integers and
pointers divisible by 16), and bench/hardware.py compiles each recorded launch with that specialisation
(no GPU needed: Triton compiles for a GPUTarget offline, cuobjdump reads the cubin)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

import rnnfast
from bench import hardware, model
from bench import report as bench_report
from bench.cases import DTYPES as DTYPE_OF
from rnnfast import wavefront
from rnnfast.dispatch import MIN_TRITON
from rnnfast.kernels import configs, launch
from tests.threaded import threaded_programs

# Its expensive module fixtures are made once: pytest-xdist runs this module on one worker.
pytestmark = pytest.mark.xdist_group("test_compile")

REPO = Path(__file__).resolve().parent.parent
CELLS = ["lstm", "gru", "rnn_tanh"]
DTYPES = ["fp32", "fp16", "bf16"]
GPUS = ["h100", "a100"]
SEQ_LEN = 64
# (batch, hidden): each specialisation class of B and H (= 1, a multiple of 16, neither), one and several
# K pieces, one and several batch tiles, issue 11's grid (H 256 and 768 at B 16 and 64); and H not a
# multiple of 16 at B=64, whose unaligned operand rows spilled up to 184 B per thread at 255 registers with
# a 64-row batch tile.
SHAPES = [(1, 17), (16, 256), (64, 256), (5, 257), (16, 768), (64, 768), (64, 100)]
# Bytes spilled per thread by a planned kernel: none may.
SPILL_BUDGET = 0


def _requests():
    # One flag combination (bidirectional, training) to keep CI short: the others compile to other kernels,
    # which `python -m bench report` compiles (every combination, none spilling at its last run: README).
    return [
        dict(cell=cell, scan_pass=scan_pass, seq_len=SEQ_LEN, batch=batch, hidden=hidden, dtype=dtype, gpu=gpu,
             directions=2, training=True)
        for cell in CELLS for dtype in DTYPES for gpu in GPUS for batch, hidden in SHAPES
        for scan_pass in ("forward", "backward")
    ]  # fmt: skip


@pytest.fixture(scope="module")
def report():
    return hardware.kernel_report(_requests())


@pytest.mark.parametrize("cell", CELLS)
def test_launched_kernels_compile_within_limits(report, cell):
    rows = [row for row in report if row["cell"] == cell]
    requests = [request for request in _requests() if request["cell"] == cell]
    covered = {tuple((k, row[k]) for k in requests[0]) for row in rows}
    assert covered == {tuple(request.items()) for request in requests}
    assert all(row["fits"] for row in rows), "\n".join(str(row) for row in rows if not row["fits"])
    spills = [row for row in rows if row["spill_bytes"] > SPILL_BUDGET]
    assert not spills, "\n".join(map(str, spills))
    # The GPU computes what the interpreter computes: no approximate instruction (an fp32 `/` would be one).
    approximate = [row for row in rows if row["approximate_instructions"]]
    assert not approximate, "\n".join(map(str, approximate))
    assert all(row["loop_instructions"] > row["mma_instructions"] > 0 for row in rows)


# Wavefront stacks (rnnfast/wavefront.py), every cell: each pass the product runs as a wavefront at issue
# 26's shape (fp16 B16 H768) and at H128, with the input weights on chip (forwards and backwards), with
# dropout noise, and H128's forward without; and at H100 (not a multiple of 16) on an H100, where both
# passes stream them.
def _wavefront_requests():
    requests = []
    for cell in CELLS:
        for gpu in GPUS:
            for hidden in (768, 128, 100):
                if hidden == 100 and gpu != "h100":
                    continue
                with configs.planning_for(gpu):
                    if wavefront.wavefront_problem(cell, 2, False, False, False, hidden, 16, torch.float16, None):
                        continue
                    passes = [("forward", True), ("forward", False)] if hidden == 128 else [("forward", True)]
                    if wavefront.backward_wavefront(cell, 2, hidden, 16, torch.float16, None):
                        passes.append(("backward", True))
                requests += [
                    dict(cell=cell, scan_pass=scan_pass, seq_len=SEQ_LEN, batch=16, hidden=hidden, dtype="fp16",
                         gpu=gpu, directions=1, training=True, wavefront_layers=2, noise=noise)
                    for scan_pass, noise in passes
                ]  # fmt: skip
    # And where 32-row tiles with W_in on chip spilled (the Elman fp16 B64 H768 forward on an H100), with
    # 16-row tiles.
    return requests + [ELMAN_B64_FORWARD]


ELMAN_B64_FORWARD = dict(cell="rnn_tanh", scan_pass="forward", seq_len=SEQ_LEN, batch=64, hidden=768, dtype="fp16",
                         gpu="h100", directions=1, training=True, wavefront_layers=2, noise=True)  # fmt: skip


WAVEFRONT_REQUESTS = _wavefront_requests()


def test_wavefront_kernels_compile_within_limits():
    with configs.planning_for("h100"):
        elman_b64 = configs.plan_wavefront_lanes("rnn_tanh", 768, 64, torch.float16, None, 2).forward
    assert elman_b64.in_pieces and elman_b64.block_b == 16, elman_b64
    on_chip = {(r["cell"], r["gpu"], r["scan_pass"]) for r in WAVEFRONT_REQUESTS if r["hidden"] == 768}
    passes = {
        (cell, "h100", scan_pass) for cell in ("lstm", "gru", "rnn_tanh") for scan_pass in ("forward", "backward")
    }
    assert passes <= on_chip
    rows = hardware.kernel_report(WAVEFRONT_REQUESTS)
    assert len(rows) == len(WAVEFRONT_REQUESTS)  # one launch each: the whole stack's pass
    for row in rows:
        assert row["launches"] == 1 and row["fits"] and row["loop_local_accesses"] == 0, row
        # Only the LSTM's backward at H768, over configs.MAX_INPUT_SLICES_BYTES, spills: 16 B, at maxnreg
        # 255, outside its time loop (8 warps: 24 B, one local load per step).
        over_the_limit = (row["cell"], row["scan_pass"], row["hidden"]) == ("lstm", "backward", 768)
        assert row["spill_bytes"] <= (16 if over_the_limit else 0), row
        assert not row["approximate_instructions"] and row["loop_instructions"] > row["mma_instructions"] > 0, row
    # Both layers' programs in one wave of the SMs.
    assert all(row["programs"] <= configs.GPUS[row["gpu"]].sm_count for row in rows)


def test_a_block_fits_only_with_all_its_threads_registers():
    """KernelResources.fits: 255 registers a thread fit a block of 8 warps (65,280 of an SM's 65,536),
    not of 16 (what ptxas compiled under maxnreg at 16 warps: 244 a thread); shared memory per block."""
    resources = hardware.KernelResources(255, 0, 1024, 1, 0, 2, 0)
    assert resources.fits(90, 8) and not resources.fits(90, 16)
    assert hardware.KernelResources(128, 0, 1024, 1, 0, 2, 0).fits(90, 16)
    too_much_shared = hardware.KernelResources(64, 0, configs.GPUS["h100"].shared_per_block + 1, 1, 0, 2, 0)
    assert not too_much_shared.fits(90, 4)


def test_time_loop_is_the_outermost_loop_and_its_local_accesses_count():
    listing = """
        /*0000*/                   STL [R1+0x8], R3 ;
        /*0010*/                   S2R R0, SR_CTAID.X ;
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0030*/                   LDG.E R2, desc[UR4][R6.64] ;
        /*0040*/              @!P0 BRA 0x30 ;
        /*0050*/               @P1 LDL.64 R2, [R1+0x10] ;
        /*0060*/                   BRA 0x20 ;
        /*0070*/                   LDL R3, [R1+0x8] ;
    """
    loop = hardware.time_loop(listing)
    assert len(loop) == 5 and loop[0].startswith("HMMA")  # 0x20 .. 0x60, the inner loop's once
    assert hardware.local_accesses(loop) == 1  # the predicated LDL.64; the STL and LDL outside do not count
    assert len(hardware.time_loop(listing.replace("BRA 0x20", "BRA 0x70"))) == 2  # only 0x30 .. 0x40
    assert hardware.time_loop("        /*0000*/   EXIT ;") == []


# A folder holding the oldest Triton rnnfast supports (dispatch.MIN_TRITON; torch 2.11's CUDA wheels pin
# it), put first on the path of a compile run in another process: .ci/run installs one there.
OLDEST_TRITON = os.environ.get("RNNFAST_OLDEST_TRITON")
OLDEST_TRITON_COMPILE = """
import json, sys, triton
from bench import hardware
print(json.dumps(dict(version=triton.__version__, rows=hardware.kernel_report(json.loads(sys.argv[1])))))
"""


@pytest.mark.skipif(not OLDEST_TRITON, reason="RNNFAST_OLDEST_TRITON names no folder with the oldest Triton")
def test_kernels_compile_with_the_oldest_supported_triton():
    """Every cell's kernels, both passes, at issue 11's B16 H768 (K pieces, K split) and at B64 H768 (64-row
    tiles), fp16 and fp32, compiled as launched for both GPUs, and the wavefronts with input weights on chip,
    by the oldest Triton rnnfast supports: they compile, fit and do not spill. Its tl has no atomic_poll:
    the barrier waits in inline PTX (recurrence._POLL_ASM); with a Triton loop there, 14 of the B64 H768
    kernels spilled 8-160 B."""
    requests = [
        dict(cell=cell, scan_pass=scan_pass, seq_len=SEQ_LEN, batch=batch, hidden=768, dtype=dtype, gpu=gpu,
             directions=1, training=True)
        for batch in (16, 64) for cell in CELLS for dtype in ("fp16", "fp32") for gpu in GPUS
        for scan_pass in ("forward", "backward")
    ]  # fmt: skip
    # And issue 26's wavefronts (2 layers, dropout noise) on an H100: the forwards with W_ih on chip and
    # the backwards with the layer above's (planned for this Triton: K split across every warp; the
    # LSTM's 196,608 B of slices in 16-row tiles).
    wavefronts = [
        dict(cell=cell, scan_pass=scan_pass, seq_len=SEQ_LEN, batch=16, hidden=768, dtype="fp16", gpu="h100",
             directions=1, training=True, wavefront_layers=2, noise=True)
        for cell in CELLS for scan_pass in ("forward", "backward")
    ] + [ELMAN_B64_FORWARD]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": OLDEST_TRITON, "TRITON_INTERPRET": "0"}
    run = subprocess.run(
        [sys.executable, "-c", OLDEST_TRITON_COMPILE, json.dumps(requests + wavefronts)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert tuple(int(part) for part in result["version"].split(".")[:2]) == MIN_TRITON
    rows = result["rows"]
    layers = [row for row in rows if not row.get("wavefront_layers")]
    assert {(r["batch"], r["cell"], r["scan_pass"], r["dtype"], r["gpu"]) for r in layers} == {
        (r["batch"], r["cell"], r["scan_pass"], r["dtype"], r["gpu"]) for r in requests
    }
    stacks = [row for row in rows if row.get("wavefront_layers")]
    assert len(stacks) == len(wavefronts) and all(row["launches"] == 1 for row in stacks), stacks
    assert all(row["fits"] and row["spill_bytes"] == 0 for row in rows), [r for r in rows if r["spill_bytes"]]
    assert not any(row["approximate_instructions"] for row in rows)


@pytest.mark.parametrize(
    "cell, hidden, batch, dtype, on_chip_36",
    [("lstm", 384, 64, torch.float16, False), ("rnn_tanh", 768, 32, torch.float32, False),
     ("rnn_tanh", 768, 64, torch.float16, True), ("lstm", 768, 16, torch.float16, True)],
)  # fmt: skip
def test_input_slices_over_160_kib_before_triton_3_9(monkeypatch, cell, hidden, batch, dtype, on_chip_36):
    """configs._slices_compile: with Triton 3.6 a forward holds more than 160 KiB of slices only with K
    split across every warp in 16 bits (LSTM fp16 H384 B64, K split 4 ways, and Elman fp32 H768 B32
    spilled 24-32 B; python -m bench report --wavefront-kernels); Triton 3.9 holds all four on chip."""

    def forward(version: tuple[int, int]):
        monkeypatch.setattr(configs, "TRITON_VERSION", version)
        monkeypatch.setattr(configs, "_PLANS", {})
        with configs.planning_for("h100"):
            return configs.plan_wavefront_lanes(cell, hidden, batch, dtype, None, 2).forward

    assert bool(forward((3, 6)).in_pieces) == on_chip_36
    assert forward((3, 9)).in_pieces


@pytest.mark.parametrize(
    "cell, hidden, batch, gpu, on_chip",
    [("lstm", 512, 32, "h100", False), ("gru", 512, 32, "h100", False), ("rnn_tanh", 768, 32, "a100", False),
     ("lstm", 384, 32, "h100", True), ("gru", 384, 32, "a100", True), ("rnn_tanh", 512, 64, "a100", True)],
)  # fmt: skip
def test_wide_tile_input_slices_in_32_bits(monkeypatch, cell, hidden, batch, gpu, on_chip):
    """configs._slices_compile: fp32 forwards with 32-row tiles and 96 KiB or more of slices hold them on
    chip only with the shorter K (Triton 3.9, python -m bench report --wavefront-kernels: LSTM, GRU H512
    B32 on sm_90 and Elman H768 B32 on sm_80 spilled 72-96 B; the others took 250-255 registers, none
    spilled)."""
    monkeypatch.setattr(configs, "TRITON_VERSION", (3, 9))
    monkeypatch.setattr(configs, "_PLANS", {})
    with configs.planning_for(gpu):
        forward = configs.plan_wavefront_lanes(cell, hidden, batch, torch.float32, None, 2).forward
    assert bool(forward.in_pieces) == on_chip


@pytest.mark.parametrize("version, split", [((3, 6), 1), ((3, 9), 2)])
def test_wide_tiles_keep_k_whole_on_sm80_before_triton_3_9(monkeypatch, version, split):
    """configs.wide_tile_k_split: the A100's LSTM fp16 B64 H768 plans (64-row tiles) split K 2 ways, but
    not with a Triton before 3.9, which spilled there (the oldest-Triton compile above checks the result);
    the H100's 64-row forward is the same with both."""

    def plans(gpu: str, version: tuple[int, int]):
        monkeypatch.setattr(configs, "TRITON_VERSION", version)
        monkeypatch.setattr(configs, "_PLANS", {})
        with configs.planning_for(gpu):
            return configs.plan_layer("lstm", 768, 64, torch.float16)

    a100 = plans("a100", version)
    assert (a100.forward.block_b, a100.backward.block_b, a100.forward.k_split, a100.backward.k_split) == (
        64, 64, split, split,
    )  # fmt: skip
    assert plans("h100", version).forward == plans("h100", (3, 9)).forward  # 64-row tiles, split on sm_90


@pytest.mark.parametrize("version, k_groups", [((3, 6), 1), ((3, 9), 2)])
def test_k_groups_for_a_shorter_chain_from_triton_3_9(monkeypatch, version, k_groups):
    """configs.grouped_for_speed: the LSTM fp16 B16 H768 backward on an H100 (48 programs, a chain of 48
    MMAs ungrouped) takes K groups with Triton 3.9, not before (where such plans spilled)."""
    monkeypatch.setattr(configs, "TRITON_VERSION", version)
    monkeypatch.setattr(configs, "_PLANS", {})
    with configs.planning_for("h100"):
        backward = configs.plan_layer("lstm", 768, 16, torch.float16).backward
    assert (backward.k_groups, backward.programs) == (k_groups, 48 * k_groups)


def test_launches_are_specialised_as_triton_launches_them(report):
    lstm = {(row["batch"], row["hidden"], row["scan_pass"]): row for row in report if row["cell"] == "lstm"}
    # B=1 becomes a constant; H=256 and the fresh buffers are multiples of 16; 17 and 5 are not.
    assert lstm[1, 17, "forward"]["specialized"] == "B=1, pointers%16 10/10"
    assert lstm[16, 256, "forward"]["specialized"] == "B%16, H%16, pointers%16 10/10"
    assert lstm[5, 257, "backward"]["specialized"] == "pointers%16 13/13"
    # The grid barrier: one launch per pass, for both directions at once unless that would stream W_hh
    # where one direction keeps it on chip (configs.plan_scan): then one launch per direction.
    for row in report:
        with configs.planning_for(row["gpu"]):
            plan = configs.plan_scan(row["cell"], row["hidden"], row["batch"], DTYPE_OF[row["dtype"]], None, 2)
        assert row["launches"] == 2 // plan.directions, row


@pytest.mark.parametrize("gpu", GPUS)
def test_issue_grid_keeps_w_hh_on_chip(gpu):
    """H 256 and 768 at B 16 and 64, every cell and dtype, one direction and both: one launch per pass (per
    direction where both would not fit at once) and W_hh never re-read per step. The fp32 LSTM backward at
    H768 on an A100 gets there with K groups: its narrowest slice (16 units of all four gates, K = 4H,
    196,608 B) does not fit in a block's shared memory, so two programs hold half of K each."""
    grouped = []
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for hidden in (256, 768):
                for batch in (16, 64):
                    for directions in (1, 2):
                        with configs.planning_for(gpu):
                            plan = configs.plan_scan(cell, hidden, batch, dtype, None, directions)
                        assert plan.grid_sync and plan.programs <= plan.gpu.sm_count
                        assert plan.weight_bytes_per_step == 0, (cell, dtype, hidden, batch, directions)
                        if plan.backward.k_groups > 1 and directions == 1:
                            grouped.append((cell, dtype, hidden, batch))
                            slice_bytes = 4 * hidden * configs.MIN_DOT * 4
                            if 2 * plan.backward.weight_bytes != slice_bytes:  # else it fits no block
                                assert_grouped_for_speed(plan, gpu)
                        assert plan.forward.k_groups == 1
    # Grouped as the only way to keep the slice on chip (K = 4H fp32: 196,608 B per 16 units), and where
    # configs.GROUPED_MIN_MMA_CHAIN takes K groups for a shorter MMA chain (LSTM fp16 B16 H768: 48 -> 24).
    needed = {"h100": [], "a100": [("lstm", torch.float32, 768, 16), ("lstm", torch.float32, 768, 64)]}[gpu]
    assert set(needed) <= set(grouped) and ("lstm", torch.float16, 768, 16) in grouped


def assert_grouped_for_speed(plan: configs.LayerPlan, gpu: str) -> None:
    """A backward planned in K groups although its batch tile fits ungrouped: that plan runs an MMA chain
    of at least GROUPED_MIN_MMA_CHAIN, at least twice the grouped one's, and bench/model.py puts its step
    slower than the grouped one's."""
    elem = plan.dtype.itemsize
    grouped = plan.backward
    with configs.planning_for(gpu):
        whole = configs._tiling(
            configs.GATES[plan.cell], plan.hidden_size, plan.batch_size, grouped.block_b, elem, plan.gpu, True,
            plan.directions, configs.OPERAND_BUDGET_BYTES, 1,
        )  # fmt: skip
    assert whole.stationary, whole
    chain = configs.mma_chain(whole, elem)
    assert chain >= max(configs.GROUPED_MIN_MMA_CHAIN, 2 * configs.mma_chain(grouped, elem))
    k = configs.GATES[plan.cell] * plan.hidden_size
    step = {
        p: model.step_seconds(bench_report.pass_work(p, k, 1, True, elem), model.GPUS[gpu]) for p in (whole, grouped)
    }
    assert step[grouped] < step[whole], (plan, step)


@pytest.mark.parametrize("layer", [rnnfast.LSTM, rnnfast.GRU, rnnfast.RNN], ids=lambda layer: layer.__name__)
def test_kernels_launch_without_floating_point_contraction(monkeypatch, layer):
    """Every scan kernel is launched with enable_fp_fusion off: the device computes the arithmetic as
    written, fused multiply-adds only where a kernel calls tl.fma, as the interpreter does (Triton's own
    default contracts a * b + c, warns about it from 3.9 and changes it in 3.10)."""
    options = []
    original = InterpretedFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        options.append(kwargs.get("enable_fp_fusion"))
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", record)
    module = layer(4, 20, backend="triton", bidirectional=True)
    module(torch.randn(3, 2, 4))[0].sum().backward()
    assert len(options) >= 2 and set(options) == {False}


def test_warps_chosen_by_compiling_without_spills():
    """launch.without_spills: the plan's warps when its kernel compiles without spills, else the first of
    WARPS_TRIED that does and fits the block's shared memory, else the plan's warps with maxnreg if that
    does and a block of them can hold that many registers, else the one that fits and spills least (the
    plan's if none fits); bench/hardware.py passes its offline compile, a CUDA device Triton's (a stand-in
    compile here)."""
    gpu, meta = configs.GPUS["h100"], torch.device("meta")
    compiled = []

    def choose(planned: int, resources: dict):
        def compile_launch(kernel, grid, args, kwargs):
            key = (kwargs["num_warps"], "maxnreg") if "maxnreg" in kwargs else kwargs["num_warps"]
            compiled.append(key)
            return resources.get(key, (8, 1024))

        with launch.compiling_offline(compile_launch):
            chosen = launch.without_spills(None, (1, 1, 1), (), dict(num_warps=planned, X=1), meta, gpu)
        return (chosen["num_warps"], "maxnreg") if "maxnreg" in chosen else chosen["num_warps"]

    clean, spills, too_big = (0, 1024), (8, 1024), (0, gpu.shared_per_block + 1)
    assert choose(4, {4: clean}) == 4 and compiled == [4]
    compiled.clear()
    assert choose(4, {4: spills, 8: too_big, 16: clean}) == 16 and compiled == [4, 8, 16]
    compiled.clear()
    assert choose(8, {8: spills, 4: clean, 16: clean}) == 4 and compiled == [8, 4]
    # Every warp count spills: the plan's with ptxas allowed MAX_REGISTERS, if that does not; else the plan's.
    compiled.clear()
    assert choose(8, {8: spills, 4: spills, 16: spills, (8, "maxnreg"): clean}) == (8, "maxnreg")
    assert compiled == [8, 4, 16, (8, "maxnreg")]
    assert choose(8, {8: spills, 4: spills, 16: spills}) == 8
    # None is clean: the fitting one that spills least (the LSTM fp16 B16 H768 on-chip backward's figures).
    least = {8: (24, 1024), 4: (376, 1024), 16: (448, 1024), (8, "maxnreg"): (16, 1024)}
    assert choose(8, least) == (8, "maxnreg")
    assert choose(8, {**least, 4: (8, gpu.shared_per_block + 1)}) == (8, "maxnreg")
    assert choose(8, {8: too_big, 4: too_big, 16: too_big, (8, "maxnreg"): too_big}) == 8
    # Not at 16 warps: a block of 16 warps at 255 registers a thread would need twice an SM's registers.
    compiled.clear()
    assert choose(16, {16: spills, 8: spills, 4: spills, (16, "maxnreg"): clean}) == 16
    assert compiled == [16, 8, 4]
    # Nothing is compiled for the interpreter's CPU tensors, nor for meta tensors outside compiling_offline.
    assert launch.without_spills(None, (1, 1, 1), (), dict(num_warps=8), meta, gpu) == dict(num_warps=8)


def _probe_kernel(x_ptr, n, BLOCK: tl.constexpr):  # compiled by no test: its launches are decided, not run
    pass


def test_cuda_launch_decisions_made_once_per_specialisation(monkeypatch):
    """On a CUDA device without_spills' choice and _co_resident's answer are made once per device, grid and
    specialisation (a stand-in compile here): a launch that differs only in a runtime integer of the same
    class (T 1024 -> 2048) reuses them; another integer class, an unaligned or other-dtype tensor, another
    constexpr or grid decides again."""
    kernel = JITFunction(_probe_kernel)
    gpu, cuda = configs.GPUS["h100"], torch.device("cuda", 0)
    compiled = []

    def resources(kernel, grid, args, kwargs):
        compiled.append(kwargs["num_warps"])
        return (8, 1024) if kwargs["num_warps"] == 8 else (0, 1024)  # 8 warps spill, 4 do not

    class Compiled:
        n_regs, metadata = 255, SimpleNamespace(shared=1024, num_warps=4)

        def _init_handles(self):
            pass

    def warmup(*args, grid, **kwargs):
        compiled.append(("warmup", grid))
        return Compiled()

    monkeypatch.setattr(launch, "_cuda_resources", resources)
    monkeypatch.setattr(launch, "_cuda_decisions", {})
    monkeypatch.setattr(kernel, "warmup", warmup)
    x = torch.empty(64)

    def decide(tensor=x, n=1024, block=16, grid=(1, 1, 1)):
        compiled.clear()
        args, kwargs = (tensor,), dict(n=n, BLOCK=block, num_warps=8)
        options = launch.without_spills(kernel, grid, args, kwargs, cuda, gpu)
        assert options == dict(n=n, BLOCK=block, num_warps=4)
        launch._co_resident(kernel, grid, args, options, gpu)
        return len(compiled)

    assert decide() == 3  # 8 spills, 4 does not; then the co-residency compile
    assert decide(n=2048) == 0
    for changed in (dict(n=1), dict(n=1000), dict(tensor=x[1:]), dict(tensor=x.half()), dict(block=32),
                    dict(grid=(2, 1, 1))):  # fmt: skip
        assert decide(**changed) == 3, changed
        assert decide(**changed) == 0, changed


def test_long_hidden_sizes_stream_their_weights_within_limits():
    """H up to 4096: slices too big for a block's shared memory are streamed from L2, never planned to fail."""
    requests = [
        dict(cell="lstm", scan_pass=scan_pass, seq_len=8, batch=16, hidden=hidden, dtype=dtype, gpu=gpu,
             directions=2, training=True)
        for hidden in (1024, 4096) for dtype in ("fp32", "fp16") for gpu in GPUS
        for scan_pass in ("forward", "backward")
    ]  # fmt: skip
    rows = hardware.kernel_report(requests)
    bad = [row for row in rows if not row["fits"] or row["spill_bytes"] > SPILL_BUDGET]
    assert not bad, "\n".join(map(str, bad))


def test_fallback_kernels_compile_within_limits(monkeypatch):
    """RNNFAST_NO_GRID_SYNC=1 (or a device that cannot hold every program): the same kernels without the
    barrier, one launch per step, compiled once."""
    monkeypatch.setenv("RNNFAST_NO_GRID_SYNC", "1")
    requests = [
        dict(cell=cell, scan_pass=scan_pass, seq_len=8, batch=16, hidden=768, dtype="fp16", gpu="a100",
             directions=2, training=True)
        for cell in CELLS for scan_pass in ("forward", "backward")
    ]  # fmt: skip
    rows = hardware.kernel_report(requests)
    assert {row["launches"] for row in rows} == {8} and len(rows) == len(requests)
    bad = [row for row in rows if not row["fits"] or row["spill_bytes"] > SPILL_BUDGET]
    assert not bad, "\n".join(map(str, bad))


def _recorded(record_only: bool):
    """Records each interpreted launch (kernel name, grid, arguments) instead of, or besides, running it."""
    launches = []
    original = InterpretedFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        described = [
            (tuple(a.shape), a.dtype, tuple(a.stride()), a.storage_offset() * a.element_size() % 16)
            if isinstance(a, torch.Tensor) else a
            for a in (*args, *kwargs.values())
        ]  # fmt: skip
        launches.append((self.fn.__name__, tuple(grid), tuple(kwargs), tuple(described)))
        if not record_only:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    return launches, record


@pytest.mark.parametrize(
    "cell,hidden,bidirectional", [("lstm", 20, False), ("lstm", 300, True), ("gru", 20, True), ("rnn_relu", 300, False)]
)
def test_example_launch_matches_functional(monkeypatch, cell, hidden, bidirectional):
    """bench/hardware.py compiles what its EXAMPLE_LAUNCHES launch: the same kernels, grids and
    argument shapes, dtypes, strides and alignment as rnnfast's layers launch through rnnfast.ops
    (planned for an H100 both: one launch per pass with the grid barrier, run by the threaded interpreter)."""
    monkeypatch.setenv("RNNFAST_PLAN_TARGET", "h100")
    monkeypatch.delenv("RNNFAST_NO_GRID_SYNC", raising=False)
    seq_len, batch, dtype = 2, 3, torch.float16
    layer = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn_relu": rnnfast.RNN}[cell]
    options = dict(nonlinearity="relu") if cell == "rnn_relu" else {}
    module = layer(4, hidden, backend="triton", bidirectional=bidirectional, **options).to(dtype)
    real, record = _recorded(record_only=False)
    monkeypatch.setattr(InterpretedFunction, "run", record)
    with threaded_programs():
        module(torch.randn(seq_len, batch, 4, dtype=dtype))[0].float().sum().backward()

    example, record = _recorded(record_only=True)
    monkeypatch.setattr(InterpretedFunction, "run", record)
    for scan_pass in ("forward", "backward"):
        hardware.EXAMPLE_LAUNCHES[cell](cell, scan_pass, seq_len, batch, hidden, dtype, "h100", 1 + bidirectional, True)
    assert example == real
