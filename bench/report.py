"""Plan and hardware report (`python -m bench report`): what the planner decides for each cell, dtype,
hidden size, batch size and GPU, what its kernels compile to there, and what a latency MODEL says they
would take next to the cuDNN algorithm torch.nn would run.

Kernels are compiled offline (no GPU) as they are launched: bench/hardware.py records each launch of the
cell's launcher and compiles it with the specialisation Triton's launcher gives its arguments (integers
equal to 1, integers and pointers divisible by 16). Only distinct compilations are done, and Triton's
on-disk cache makes a second report quick. Model figures come from bench/model.py: a model, not a
measurement.

Files written to --out:
- plans.csv: one row per (cell, dtype, hidden, batch, gpu), the table the README cites (PLAN_COLUMNS).
- report-kernels.csv: one row per distinct compiled kernel per GPU, with the shapes that launch it.
- report.csv: the planner's tiles, K pieces, K split and warps per cell, dtype, hidden size, batch and GPU.
- stacks.csv: per plan row, the MODEL's forward of a STACK_LAYERS-layer stack, layer by layer and as one
  wavefront launch as designed (kernels/configs.py plan_wavefront: W_ih on chip), beside cuDNN's; and the
  wavefront rnnfast runs (rnnfast/wavefront.py, LSTM: W_ih streamed from L2; the built_* columns), forward
  and forward+backward, or why the stack runs layer by layer.
- step-terms.csv: per plan row and pass, what the MODEL charges one time step, term by term.
- report.md: all five, with the command and versions.
With --wavefront-kernels, only wavefront-kernels.csv: every 2-layer wavefront pass whose plan holds the
input weights on chip (W_in beside W_hh), compiled as launched by the installed Triton (the planner's
rules read its version: `PYTHONPATH=.ci/triton-oldest python -m bench report --wavefront-kernels` for the
oldest supported one).
"""

import argparse
import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import triton

from . import model
from .cases import DTYPES
from .results import format_markdown, format_text, run_metadata, write_csv

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
HIDDEN_SIZES = (1, 17, 64, 100, 128, 256, 257, 512, 768, 1024)
BATCH_SIZES = (1, 16, 64)
GPUS = ("h100", "a100")
SEQ_LEN = 1024
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# The kernels one layer launches, as (label, pass, training); each for one direction and for both.
KERNELS = (
    ("forward-training", "forward", True),
    ("forward-inference", "forward", False),
    ("backward", "backward", True),
)
PLAN_COLUMNS = [
    "cell", "dtype", "hidden", "batch", "gpu", "directions", "seq_len", "variant", "programs", "launches_forward",
    "launches_backward", "weight_bytes_per_step", "registers", "spill_bytes", "shared_bytes", "fits",
    "specialized", "model_forward_ms", "model_forward_backward_ms", "cudnn_algorithm", "cudnn_algorithm_backward",
    "cudnn_standard_floor_forward_ms", "cudnn_standard_floor_forward_backward_ms",
]  # fmt: skip


def plan_quantities(
    cell: str, hidden: int, batch: int, dtype: torch.dtype, seq_len: int, gpu: str, directions: int = 1
) -> dict:
    """The one adapter between the planner and this report: what the plan (kernels/configs.py plan_scan)
    does for one layer of `directions` directions on `gpu`, as the plans.csv columns and the model's
    PassWork. Both directions of a bidirectional layer share each launch where the plan allows; otherwise
    they run as `launch_groups` = 2 launches (or step sequences) one after the other.

    Weight-stationary kernels: each program owns a tile of hidden units (and of batch rows) and runs one
    recurrent dot per step, [BLOCK_B, K] x [K, columns]: K = H forward with a column per (unit, gate, gates
    padded to a power of two), K = gates x H backward with a column per unit. A stationary slice is read
    from shared memory each step (its K pieces' operand loads are independent: one L2 round trip); a
    streamed one comes from L2 in BLOCK_K chunks, one round trip each. Every step reads the whole operand
    (h_{t-1}, or the gate gradients) from L2. With the grid barrier one launch runs every step, with a
    barrier between steps; the fallback launches once per step and reloads the slice each time. Programs
    in K groups (pairs per hidden tile, each holding half of K) each publish their partial product and read
    the partner's through L2 every step: two more dependent L2 round trips (the partner's count, then its
    part) and the two parts' bytes. fp32 dots run as TF32 on tensor cores (torch's default
    cudnn.allow_tf32), modelled at the fp16 rate."""
    from rnnfast.kernels.configs import plan_scan, planning_for

    with planning_for(gpu):
        plan = plan_scan(cell, hidden, batch, dtype, None, directions)
    groups = directions // plan.directions
    gates, elem = GATES[cell], torch.empty(0, dtype=dtype).element_size()
    forward = pass_work(plan.forward, hidden, plan.launches_forward(seq_len), plan.grid_sync, elem)
    backward = pass_work(plan.backward, gates * hidden, plan.launches_backward(seq_len), plan.grid_sync, elem)
    return dict(
        variant=plan.variant,
        programs=plan.programs,
        launches_forward=groups * plan.launches_forward(seq_len),
        launches_backward=groups * plan.launches_backward(seq_len),
        weight_bytes_per_step=plan.weight_bytes_per_step,
        launch_groups=groups,
        forward=forward,
        backward=backward,
    )


def pass_work(pass_plan, k: int, launches: int, grid_sync: bool, elem: int) -> model.PassWork:
    """The model's PassWork of one pass plan (kernels/configs.py PassPlan) whose dot has K = `k`, as
    plan_quantities describes it."""
    k_total = sum(pass_plan.k_pieces) if pass_plan.stationary else triton.cdiv(k, pass_plan.block_k) * pass_plan.block_k
    chunks = len(pass_plan.k_pieces) if pass_plan.stationary else k_total // pass_plan.block_k
    on_chip = pass_plan.stationary and grid_sync
    # An MMA takes 16 of K (8 in TF32); a warp's MMAs form one chain along its share of all of K (the
    # pieces' and chunks' dots accumulate into one tile: Triton folds even `x + tl.dot(...)` into it).
    k_step = 8 if elem == 4 else 16
    chain = k_total // (pass_plan.k_split * k_step)
    grouped = pass_plan.k_groups > 1
    # A pair's program publishes its part and reads its partner's.
    exchange_bytes = 2 * pass_plan.block_b * pass_plan.dot_columns * 4 if grouped else 0
    return model.PassWork(
        programs=pass_plan.programs,
        launches=launches,
        barriers_per_step=1 if grid_sync else 0,
        tiles_per_step=1,
        chunks_per_step=chunks,
        l2_round_trips_per_step=(1 if pass_plan.stationary else chunks) + (2 if grouped else 0),
        l2_bytes_per_step=pass_plan.block_b * k_total * elem
        + (0 if on_chip else pass_plan.weight_bytes)
        + exchange_bytes,
        shared_bytes_per_step=pass_plan.weight_bytes if pass_plan.stationary else 0,
        dot_flops_per_step=2 * pass_plan.block_b * k_total * pass_plan.dot_columns,
        mma_chain_per_step=chain,
        k_split_sums_per_step=1 if pass_plan.k_split > 1 else 0,
        tensor_cores=True,
    )


def model_layer_ms(
    cell: str, hidden: int, batch: int, dtype: str, seq_len: int, gpu: str, directions: int = 1, q: dict | None = None
) -> tuple[float, float]:
    """The MODEL's (forward, forward+backward) milliseconds of one layer planned for `gpu`, input size =
    hidden size: the figures of plans.csv. q: plan_quantities' answer for it, when already at hand."""
    q = q or plan_quantities(cell, hidden, batch, DTYPES[dtype], seq_len, gpu, directions)
    return model.layer_ms(
        q["forward"], q["backward"], GATES[cell], seq_len, batch, hidden, DTYPES[dtype].itemsize, gpu,
        directions=directions, launch_groups=q["launch_groups"],
    )  # fmt: skip


def plan_rows(
    cells: Sequence[str], dtypes: Sequence[str], hidden_sizes: Sequence[int], batch_sizes: Sequence[int],
    gpus: Sequence[str], seq_len: int, directions: Sequence[int] = (1,),
) -> list[dict]:  # fmt: skip
    """plans.csv without the compiled columns: plan, model and cuDNN's algorithm per shape and GPU."""
    rows = []
    shapes = itertools.product(cells, dtypes, hidden_sizes, batch_sizes, gpus, directions)
    for cell, dtype, hidden, batch, gpu, direction_count in shapes:
        q = plan_quantities(cell, hidden, batch, DTYPES[dtype], seq_len, gpu, direction_count)
        forward_ms, total_ms = model_layer_ms(cell, hidden, batch, dtype, seq_len, gpu, direction_count, q)
        algorithm = {
            f"cudnn_algorithm{suffix}": model.cudnn_algorithm(
                cell,
                dtype,
                hidden,
                batch,
                input_size=hidden,
                forward=not suffix,
                bidirectional=direction_count == 2,
            )  # fmt: skip
            for suffix in ("", "_backward")
        }
        # cuDNN STANDARD's lower bound, where torch.nn runs it forward and backward.
        standard = all(name == "STANDARD" for name in algorithm.values())
        floor = model.cudnn_standard_floor_ms(
            GATES[cell], seq_len, batch, hidden, DTYPES[dtype].itemsize, gpu, direction_count
        ) if standard else (None, None)  # fmt: skip
        rows.append(dict(
            cell=cell, dtype=dtype, hidden=hidden, batch=batch, gpu=gpu, directions=direction_count,
            seq_len=seq_len, **{k: v for k, v in q.items() if k not in ("forward", "backward", "launch_groups")},
            model_forward_ms=round(forward_ms, 3), model_forward_backward_ms=round(total_ms, 3),
            **algorithm,
            cudnn_standard_floor_forward_ms=None if floor[0] is None else round(floor[0], 3),
            cudnn_standard_floor_forward_backward_ms=None if floor[1] is None else round(floor[1], 3),
        ))  # fmt: skip
    return rows


# The stack the wavefront model is reported for (kernels/configs.py plan_wavefront; issue 26 item 1).
STACK_LAYERS = 2
STACK_COLUMNS = [
    "cell", "dtype", "hidden", "batch", "gpu", "directions", "num_layers", "seq_len", "wavefront", "reason",
    "programs_per_layer", "weight_bytes_per_program", "barrier_steps", "model_layer_by_layer_forward_ms",
    "model_forward_ms", "model_vs_layer_by_layer", "model_overlapped_forward_ms",
    "model_overlapped_vs_layer_by_layer", "cudnn_algorithm",
    "cudnn_standard_floor_layer_by_layer_forward_ms", "cudnn_standard_floor_overlapped_forward_ms",
    "model_layer_by_layer_forward_backward_ms", "built_wavefront", "built_reason", "built_backward_wavefront",
    "built_w_in_on_chip", "built_backward_w_in_on_chip", "built_programs_per_layer",
    "model_built_forward_ms", "model_built_forward_backward_ms", "model_built_vs_layer_by_layer",
    "model_built_training_vs_layer_by_layer",
]  # fmt: skip


def overlapped_upper_work(upper, input_size: int, hidden: int, elem: int) -> tuple[model.PassWork, model.PassWork]:
    """An upper layer's wavefront step split as model.overlapped_wavefront_step_seconds runs it, on the
    same slice (W_ih and W_hh of plan_wavefront's upper plan): (what follows the barrier: h_{t-1}'s load,
    the W_hh dot over K = H, the K-split sum and the gate tile; what runs during the barrier wait: y_t's
    load and the W_ih dot over K = input_size, in pieces of the same width)."""
    from rnnfast.kernels.configs import k_pieces

    columns = upper.dot_columns
    piece = max(upper.k_pieces)

    def part(k: int):
        return dataclasses.replace(upper, k_pieces=k_pieces(k, piece), weight_bytes=k * columns * elem)

    critical = pass_work(part(hidden), hidden, 1, True, elem)
    waiting = pass_work(part(input_size), input_size, 1, True, elem)
    waiting = dataclasses.replace(waiting, barriers_per_step=0, tiles_per_step=0, k_split_sums_per_step=0)
    return critical, waiting


def lane_wavefront_row(cell: str, hidden: int, batch: int, dtype: str, seq_len: int, gpu: str, num_layers: int) -> dict:
    """The wavefront rnnfast runs for a unidirectional stack (rnnfast/wavefront.py; every cell), or why it
    runs layer by layer: its plan (one pass plan for every layer: configs.plan_wavefront_lanes) and the
    MODEL's (forward, forward+backward) of it (model.lane_wavefront_ms). The upper layers' input dots run
    during the barrier wait: from W_in on chip where the pass's plan holds it (built_w_in_on_chip,
    built_backward_w_in_on_chip), else streamed from L2 in launch.wavefront_block_k chunks."""
    from rnnfast.kernels.configs import plan_wavefront_lanes, planning_for
    from rnnfast.kernels.launch import wavefront_block_k
    from rnnfast.wavefront import backward_wavefront, wavefront_problem

    torch_dtype, gates = DTYPES[dtype], GATES[cell]
    elem = torch_dtype.itemsize
    with planning_for(gpu):
        shape = (hidden, batch, torch_dtype, None)
        reason = wavefront_problem(cell, num_layers, False, False, False, *shape)
        plan = plan_wavefront_lanes(cell, hidden, batch, torch_dtype, None, num_layers)
        backward_built = reason is None and backward_wavefront(cell, num_layers, *shape)
    row = dict(built_wavefront=reason is None, built_reason=reason or "", built_backward_wavefront=backward_built)
    # The model of the wavefront wherever its kernels could run it (also where the rule declines it).
    if not plan.grid_sync or plan.directions != num_layers:
        return row
    block_k = wavefront_block_k(hidden)

    def works(pass_plan, k: int):
        """(the step after the barrier, the upper layers' input dot during the wait) of one lane."""
        slice_bytes = k * pass_plan.dot_columns * elem
        lane = dataclasses.replace(pass_plan, directions=1, weight_bytes=slice_bytes)
        if pass_plan.in_pieces:
            waiting = pass_work(lane, k, 1, True, elem)
        else:
            waiting = pass_work(dataclasses.replace(lane, k_pieces=(), k_split=1, block_k=block_k), k, 1, True, elem)
        waiting = dataclasses.replace(waiting, barriers_per_step=0, tiles_per_step=0, k_split_sums_per_step=0)
        return pass_work(lane, k, 1, True, elem), waiting

    forward, backward = works(plan.forward, hidden), works(plan.backward, gates * hidden)
    built = model.lane_wavefront_ms(*forward, *backward, num_layers, gates, seq_len, batch, hidden, elem, gpu)
    return dict(
        **row, built_w_in_on_chip=bool(plan.forward.in_pieces),
        built_backward_w_in_on_chip=backward_built and bool(plan.backward.in_pieces),
        built_programs_per_layer=forward[0].programs,
        model_built_forward_ms=round(built[0], 3), model_built_forward_backward_ms=round(built[1], 3),
    )  # fmt: skip


def stack_row(
    cell: str, hidden: int, batch: int, dtype: str, seq_len: int, gpu: str, directions: int = 1,
    num_layers: int = STACK_LAYERS,
) -> dict:  # fmt: skip
    """The MODEL's forward of `num_layers` stacked layers (input size of layer 0 = hidden size): layer by
    layer as today (each layer as plans.csv models it; an upper layer of a bidirectional stack projects
    2H inputs), and as one wavefront launch where plan_wavefront finds one (T + L - 1 barrier steps;
    otherwise the layers run one after the other: L x T). Beside it the cuDNN algorithm torch.nn would run
    and lower bounds on its STANDARD algorithm: layer by layer, and with the layers overlapped perfectly
    (unidirectional only: a bidirectional stack cannot overlap its layers' steps, NO_BIDIRECTIONAL_WAVEFRONT)."""
    from rnnfast.kernels.configs import NO_BIDIRECTIONAL_WAVEFRONT, plan_wavefront, planning_for

    torch_dtype, gates = DTYPES[dtype], GATES[cell]
    elem = torch_dtype.itemsize
    q = plan_quantities(cell, hidden, batch, torch_dtype, seq_len, gpu, directions)
    inputs = [hidden] + [directions * hidden] * (num_layers - 1)
    per_layer = [
        model.layer_ms(
            q["forward"], q["backward"], gates, seq_len, batch, hidden, elem, gpu, directions=directions,
            launch_groups=q["launch_groups"], input_size=size,
        )
        for size in inputs
    ]  # fmt: skip
    layer_by_layer = sum(ms[0] for ms in per_layer)
    layer_by_layer_training = sum(ms[1] for ms in per_layer)
    built = (
        lane_wavefront_row(cell, hidden, batch, dtype, seq_len, gpu, num_layers)
        if directions == 1
        else dict(built_wavefront=False, built_reason=NO_BIDIRECTIONAL_WAVEFRONT, built_backward_wavefront=False)
    )
    if "model_built_forward_ms" in built and not built["built_backward_wavefront"]:
        # The backward then runs layer by layer, as it does without a wavefront forward.
        training_ms = built["model_built_forward_ms"] + layer_by_layer_training - layer_by_layer
        built["model_built_forward_backward_ms"] = round(training_ms, 3)
    if "model_built_forward_ms" in built:
        built["model_built_vs_layer_by_layer"] = round(built["model_built_forward_ms"] / layer_by_layer, 3)
        built["model_built_training_vs_layer_by_layer"] = round(
            built["model_built_forward_backward_ms"] / layer_by_layer_training, 3
        )
    with planning_for(gpu):
        plan = plan_wavefront(cell, hidden, batch, torch_dtype, num_layers, directions)
    if plan.wavefront:
        works = [pass_work(plan.first, hidden, 1, True, elem)]
        works += [pass_work(plan.upper, 2 * hidden, 1, True, elem)] * (num_layers - 1)
        stack = model.wavefront_forward_ms(works, gates, seq_len, batch, hidden, elem, gpu)
        critical, waiting = overlapped_upper_work(plan.upper, hidden, hidden, elem)
        behind_two = model.wavefront_forward_ms(
            works[:1] + [critical] * (num_layers - 1), gates, seq_len, batch, hidden, elem, gpu,
            waiting=[None] + [waiting] * (num_layers - 1),
        )  # fmt: skip
        programs = "+".join(str(work.programs) for work in works)
        weight_bytes = max(plan.first.weight_bytes, plan.upper.weight_bytes)
    else:
        stack = behind_two = layer_by_layer
        programs = weight_bytes = None
    floors = [
        model.cudnn_standard_floor_ms(gates, seq_len, batch, hidden, elem, gpu, directions, input_size=size)[0]
        for size in inputs
    ]
    overlapped = (
        model.cudnn_standard_overlapped_floor_forward_ms(gates, seq_len, batch, hidden, elem, gpu, num_layers)
        if directions == 1 else sum(floors)
    )  # fmt: skip
    algorithm = model.cudnn_algorithm(
        cell, dtype, hidden, batch, input_size=hidden, num_layers=num_layers, bidirectional=directions == 2
    )
    return dict(
        cell=cell, dtype=dtype, hidden=hidden, batch=batch, gpu=gpu, directions=directions, num_layers=num_layers,
        seq_len=seq_len, wavefront=plan.wavefront, reason=plan.reason, programs_per_layer=programs,
        weight_bytes_per_program=weight_bytes, barrier_steps=plan.barrier_steps(seq_len),
        model_layer_by_layer_forward_ms=round(layer_by_layer, 3), model_forward_ms=round(stack, 3),
        model_vs_layer_by_layer=round(stack / layer_by_layer, 3), model_overlapped_forward_ms=round(behind_two, 3),
        model_overlapped_vs_layer_by_layer=round(behind_two / layer_by_layer, 3), cudnn_algorithm=algorithm,
        cudnn_standard_floor_layer_by_layer_forward_ms=round(sum(floors), 3) if algorithm == "STANDARD" else None,
        cudnn_standard_floor_overlapped_forward_ms=round(overlapped, 3) if algorithm == "STANDARD" else None,
        model_layer_by_layer_forward_backward_ms=round(layer_by_layer_training, 3), **built,
    )  # fmt: skip


STEP_TERM_COLUMNS = [
    "cell", "dtype", "hidden", "batch", "gpu", "directions", "pass", "programs", *model.STEP_TERMS, "cycles",
    "compute_us", "l2_traffic_us", "barrier_us", "step_us",
]  # fmt: skip


def step_term_rows(plans: list[dict]) -> list[dict]:
    """Per plan row and pass, what the MODEL charges one time step, term by term (model.step_terms, in
    cycles of the critical program), and the step in microseconds: the backward's terms beside the
    forward's show what it pays more (issue 26 item 3)."""
    rows = []
    for row in plans:
        shape = (row["cell"], row["hidden"], row["batch"], DTYPES[row["dtype"]], row["seq_len"], row["gpu"])
        q = plan_quantities(*shape, row["directions"])
        gpu = model.GPUS[row["gpu"]]
        for name in ("forward", "backward"):
            work = q[name]
            terms = model.step_terms(work, gpu)
            cycles = sum(terms.values())
            rows.append(dict(
                **{key: row[key] for key in _SHAPE_KEYS}, **{"pass": name}, programs=work.programs,
                **{term: round(value) for term, value in terms.items()}, cycles=round(cycles),
                compute_us=round(math.ceil(work.programs / gpu.sm_count) * cycles / gpu.clock_hz * 1e6, 3),
                l2_traffic_us=round(work.programs * work.l2_bytes_per_step / gpu.l2_bytes_per_s * 1e6, 3),
                barrier_us=round(work.barriers_per_step * model.BARRIER_S * 1e6, 3),
                step_us=round(model.step_seconds(work, gpu) * 1e6, 3),
            ))  # fmt: skip
    return rows


def kernel_requests(plans: list[dict], kernels: Sequence[tuple] = KERNELS) -> list[dict]:
    """bench/hardware.py requests: every kernel of every plan row."""
    return [
        dict(cell=row["cell"], scan_pass=scan_pass, seq_len=row["seq_len"], batch=row["batch"],
             hidden=row["hidden"], dtype=row["dtype"], gpu=row["gpu"], directions=row["directions"],
             training=training)
        for row in plans for _, scan_pass, training in kernels
    ]  # fmt: skip


_SHAPE_KEYS = ("cell", "dtype", "hidden", "batch", "gpu", "directions")


def add_compiled(plans: list[dict], compiled: list[dict]) -> None:
    """Adds to each plan row the worst of its compiled kernels and their specialisations."""
    by_shape: dict[tuple, list[dict]] = {}
    for row in compiled:
        by_shape.setdefault(tuple(row[k] for k in _SHAPE_KEYS), []).append(row)
    for row in plans:
        used = by_shape[tuple(row[k] for k in _SHAPE_KEYS)]
        row["registers"] = max(r["registers"] for r in used)
        row["spill_bytes"] = max(r["spill_bytes"] for r in used)
        row["shared_bytes"] = max(r["shared_bytes"] for r in used)
        row["fits"] = all(r["fits"] for r in used)
        row["specialized"] = "; ".join(dict.fromkeys(r["specialized"] for r in used))


# What a kernel row of report-kernels.csv shows of its shapes' compiled kernels: the most of each.
_KERNEL_MAXIMA = (
    "registers", "spill_bytes", "shared_bytes", "mma_instructions", "approximate_instructions", "loop_instructions"
)  # fmt: skip


def kernel_rows(compiled: list[dict]) -> list[dict]:
    """One row per distinct compiled kernel per GPU, with the hidden x batch (x directions, for a
    bidirectional layer's) shapes that launch it."""
    label = {(scan_pass, training): name for name, scan_pass, training in KERNELS}
    rows: dict[tuple, dict] = {}
    for r in compiled:
        kernel = label[r["scan_pass"], r["training"]]
        key = (r["cell"], r["dtype"], r["gpu"], kernel, r["kernel"], r["specialized"], r["num_warps"])
        row = rows.setdefault(key, dict(
            cell=r["cell"], dtype=r["dtype"], gpu=r["gpu"], arch=f"sm_{_arch(r['gpu'])}", kernel=kernel,
            function=r["kernel"], num_warps=r["num_warps"], specialized=r["specialized"], shapes=[],
            **dict.fromkeys(_KERNEL_MAXIMA, 0), fits=True,
        ))  # fmt: skip
        shape = f"H{r['hidden']}xB{r['batch']}" + ("x2" if r["directions"] == 2 else "")
        if shape not in row["shapes"]:
            row["shapes"].append(shape)
        for what in _KERNEL_MAXIMA:
            row[what] = max(row[what], r[what])
        row["fits"] = row["fits"] and r["fits"]
    return [{**row, "shapes": " ".join(row["shapes"])} for row in rows.values()]


def _arch(gpu: str) -> int:
    from rnnfast.kernels.configs import GPUS

    return GPUS[gpu].arch


def _plans_table(plans: list[dict]):
    columns = ["cell", "dtype", "H", "B", "gpu", "dirs", "variant", "programs", "launches fwd/bwd"]
    columns += ["W bytes/step/program"]
    columns += ["regs/spill/smem", "fits", "MODEL fwd ms", "MODEL fwd+bwd ms", "cuDNN fwd / bwd"]
    columns += ["cuDNN STANDARD floor fwd / fwd+bwd ms"]
    lines = [
        [
            r["cell"], r["dtype"], r["hidden"], r["batch"], r["gpu"], r["directions"], r["variant"], r["programs"],
            f"{r['launches_forward']}/{r['launches_backward']}", r["weight_bytes_per_step"],
            f"{r['registers']}/{r['spill_bytes']} B/{r['shared_bytes'] / 1024:.0f} KB", "yes" if r["fits"] else "NO",
            f"{r['model_forward_ms']:.2f}", f"{r['model_forward_backward_ms']:.2f}",
            f"{r['cudnn_algorithm']} / {r['cudnn_algorithm_backward']}",
            "" if r["cudnn_standard_floor_forward_ms"] is None
            else f"{r['cudnn_standard_floor_forward_ms']:.2f} / {r['cudnn_standard_floor_forward_backward_ms']:.2f}",
        ]
        for r in plans
    ]  # fmt: skip
    return columns, lines


def _stack_table(rows: list[dict]):
    columns = ["cell", "dtype", "H", "B", "gpu", "dirs", "layers", "wavefront", "programs", "W bytes/program"]
    columns += ["barrier steps", "MODEL layer by layer fwd ms", "MODEL fwd ms", "vs layer by layer"]
    columns += ["MODEL two steps behind fwd ms", "vs layer by layer", "cuDNN"]
    columns += ["cuDNN STANDARD floor fwd ms: layer by layer / overlapped"]

    def ms(value) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [
        [
            r["cell"], r["dtype"], r["hidden"], r["batch"], r["gpu"], r["directions"], r["num_layers"],
            "yes" if r["wavefront"] else f"no: {r['reason']}", r["programs_per_layer"] or "",
            r["weight_bytes_per_program"] or "", r["barrier_steps"], ms(r["model_layer_by_layer_forward_ms"]),
            ms(r["model_forward_ms"]), f"{r['model_vs_layer_by_layer']:.3f}", ms(r["model_overlapped_forward_ms"]),
            f"{r['model_overlapped_vs_layer_by_layer']:.3f}", r["cudnn_algorithm"],
            "" if r["cudnn_standard_floor_layer_by_layer_forward_ms"] is None
            else f"{ms(r['cudnn_standard_floor_layer_by_layer_forward_ms'])} / "
            f"{ms(r['cudnn_standard_floor_overlapped_forward_ms'])}",
        ]
        for r in rows
    ]  # fmt: skip
    return columns, lines


def _kernel_table(rows: list[dict]):
    columns = ["cell", "dtype", "gpu", "kernel", "warps", "specialized as launched", "regs", "spill B", "smem B"]
    columns += ["MMA instr.", "approx. instr.", "loop instr.", "fits", "shapes"]
    lines = [
        [r["cell"], r["dtype"], f"{r['gpu']} ({r['arch']})", r["kernel"], r["num_warps"], r["specialized"],
         r["registers"], r["spill_bytes"], r["shared_bytes"], r["mma_instructions"], r["approximate_instructions"],
         r["loop_instructions"], "yes" if r["fits"] else "NO", r["shapes"]]
        for r in rows
    ]  # fmt: skip
    return columns, lines


def tile_rows(
    cells: Sequence[str], dtypes: Sequence[str], hidden_sizes: Sequence[int], batch_sizes: Sequence[int],
    gpus: Sequence[str],
) -> list[dict]:  # fmt: skip
    """report.csv: the planner's tiles and warps per cell, dtype, hidden size, batch and GPU, per pass."""
    from rnnfast.kernels.configs import plan_layer, planning_for

    rows = []
    for cell in cells:
        for dtype in dtypes:
            for hidden in hidden_sizes:
                for batch in batch_sizes:
                    for gpu in gpus:
                        with planning_for(gpu):
                            plan = plan_layer(cell, hidden, batch, DTYPES[dtype])
                        row = dict(cell=cell, dtype=dtype, hidden=hidden, batch=batch, gpu=gpu, variant=plan.variant)
                        for name, p in (("forward", plan.forward), ("backward", plan.backward)):
                            row[f"{name}_tiles"] = f"{p.batch_tiles}x{p.hidden_tiles}"
                            row[f"{name}_block_b_n"] = f"{p.block_b}/{p.block_n}"
                            pieces = "+".join(map(str, p.k_pieces))
                            row[f"{name}_k"] = (
                                f"streamed {p.block_k}" if not p.stationary
                                else pieces if p.k_groups == 1 else f"{p.k_groups} x ({pieces})"
                            )  # fmt: skip
                            row[f"{name}_k_split"] = p.k_split
                            row[f"{name}_warps"] = p.num_warps
                        rows.append(row)
    return rows


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="The planner's plans per cell, dtype, hidden size, batch and GPU; their kernels compiled "
        "offline as launched (registers, spills, shared memory); a latency MODEL of each plan and the cuDNN "
        "algorithm torch.nn would run. No GPU needed.",
    )
    parser.add_argument("--cell", action="append", choices=CELLS, help="only this cell (repeatable)")
    parser.add_argument("--dtype", action="append", choices=list(DTYPES), help="only this dtype (repeatable)")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN_SIZES), help="hidden sizes")
    parser.add_argument("--batch", type=int, nargs="+", default=list(BATCH_SIZES), help="batch sizes")
    parser.add_argument("--gpu", action="append", choices=GPUS, help="only this GPU (repeatable)")
    parser.add_argument(
        "--kernel", action="append", choices=[label for label, _, _ in KERNELS], help="only this kernel (repeatable)"
    )
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help="T (default %(default)s)")
    parser.add_argument(
        "--directions", type=int, nargs="+", choices=(1, 2), default=[1, 2],
        help="1: a unidirectional layer, 2: a bidirectional one (default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--stacks-only", action="store_true", help="write only stacks.csv (the MODEL's stacks; compiles nothing)"
    )
    parser.add_argument(
        "--wavefront-kernels", action="store_true",
        help="write only wavefront-kernels.csv: the wavefront passes with W_in on chip, compiled as launched",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for plans.csv, report-kernels.csv, report.csv, report.md"
    )
    return parser


WAVEFRONT_KERNEL_COLUMNS = [
    "cell", "scan_pass", "dtype", "hidden", "batch", "gpu", "block_b", "num_warps", "k_split", "weight_bytes",
    "programs", "registers", "spill_bytes", "loop_local_accesses", "shared_bytes", "fits",
]  # fmt: skip


def wavefront_kernel_rows(
    cells: Sequence[str], dtypes: Sequence[str], hidden_sizes: Sequence[int], batch_sizes: Sequence[int],
    gpus: Sequence[str], seq_len: int,
) -> list[dict]:  # fmt: skip
    """Every pass of a unidirectional STACK_LAYERS-layer stack (with dropout noise) whose wavefront plan
    holds the input weights on chip (configs.plan_wavefront_lanes: in_pieces), its plan and its one
    launch compiled as launched (the worst of its kernels)."""
    from bench import hardware
    from rnnfast.kernels.configs import plan_wavefront_lanes, planning_for

    requests, plans = [], []
    for cell, dtype, hidden, batch, gpu in itertools.product(cells, dtypes, hidden_sizes, batch_sizes, gpus):
        with planning_for(gpu):
            lanes = plan_wavefront_lanes(cell, hidden, batch, DTYPES[dtype], None, STACK_LAYERS)
        for scan_pass in ("forward", "backward"):
            plan = getattr(lanes, scan_pass)
            if plan.in_pieces:
                plans.append(plan)
                requests.append(dict(
                    cell=cell, scan_pass=scan_pass, seq_len=seq_len, batch=batch, hidden=hidden, dtype=dtype,
                    gpu=gpu, directions=1, training=True, wavefront_layers=STACK_LAYERS, noise=True,
                ))  # fmt: skip
    compiled = hardware.kernel_report(requests)
    rows = []
    for request, plan in zip(requests, plans):
        kernels = [row for row in compiled if all(row[key] == value for key, value in request.items())]
        rows.append({
            **{key: request[key] for key in ("cell", "scan_pass", "dtype", "hidden", "batch", "gpu")},
            "block_b": plan.block_b, "num_warps": plan.num_warps, "k_split": plan.k_split,
            "weight_bytes": plan.weight_bytes, "programs": max(row["programs"] for row in kernels),
            "registers": max(row["registers"] for row in kernels),
            "spill_bytes": max(row["spill_bytes"] for row in kernels),
            "loop_local_accesses": max(row["loop_local_accesses"] for row in kernels),
            "shared_bytes": max(row["shared_bytes"] for row in kernels),
            "fits": all(row["fits"] for row in kernels),
        })  # fmt: skip
    return rows


def main_report(argv: list[str]) -> int:
    from bench import hardware

    args = report_parser().parse_args(argv)
    cells = [cell for cell in CELLS if args.cell is None or cell in args.cell]
    dtypes = [name for name in DTYPES if args.dtype is None or name in args.dtype]
    gpus = [gpu for gpu in GPUS if args.gpu is None or gpu in args.gpu]
    kernels = [entry for entry in KERNELS if args.kernel is None or entry[0] in args.kernel]

    if args.wavefront_kernels:
        rows = wavefront_kernel_rows(cells, dtypes, args.hidden, args.batch, gpus, args.seq_len)
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, args.out / "wavefront-kernels.csv", WAVEFRONT_KERNEL_COLUMNS)
        # A spill outside the time loop costs nothing per step; a local load or store inside it, every step.
        failed = [row for row in rows if row["loop_local_accesses"] or not row["fits"]]
        spilled = sum(1 for row in rows if row["spill_bytes"])
        print(
            f"wrote {args.out / 'wavefront-kernels.csv'} ({len(rows)} passes compiled with triton "
            f"{triton.__version__}: {spilled} spill, {len(failed)} access local memory in the time loop or "
            f"do not fit; `report {' '.join(argv)}`)"
        )
        return 1 if failed else 0
    plans = plan_rows(cells, dtypes, args.hidden, args.batch, gpus, args.seq_len, args.directions)
    if args.stacks_only:
        stacks = [
            stack_row(r["cell"], r["hidden"], r["batch"], r["dtype"], r["seq_len"], r["gpu"], r["directions"])
            for r in plans
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(stacks, args.out / "stacks.csv", STACK_COLUMNS)
        print(f"wrote {args.out / 'stacks.csv'} ({len(stacks)} rows, MODEL; `report {' '.join(argv)}`)")
        return 0
    compiled = hardware.kernel_report(kernel_requests(plans, kernels))
    add_compiled(plans, compiled)
    kernel_lines = kernel_rows(compiled)
    tiles = tile_rows(cells, dtypes, args.hidden, args.batch, gpus)
    stacks = [
        stack_row(r["cell"], r["hidden"], r["batch"], r["dtype"], r["seq_len"], r["gpu"], r["directions"])
        for r in plans
    ]
    step_terms = step_term_rows(plans)

    metadata = run_metadata(torch.device("cpu"), ["report", *argv])
    intro = (
        f"{metadata['command']} — triton {metadata['triton']}, torch {metadata['torch']}, commit "
        f"{metadata['git_commit'][:12]}, {metadata['date']}. One layer (dirs: 1, or 2 for bidirectional), "
        f"T={args.seq_len}, input size = hidden size. Kernels compiled offline as launched: with the "
        "specialisation Triton's launcher "
        'gives these shapes\' arguments ("specialized": integers equal to 1 become constants, integers and '
        "pointers divisible by 16 are marked so). regs/spill/smem: the worst of the plan's kernels (registers "
        "per thread, spilled bytes per thread, shared memory per block). approx. instr.: approximate "
        "floating-point PTX instructions, whose results the interpreter does not reproduce (none expected). "
        "loop instr.: SASS instructions of the time loop, what each warp issues per step. "
        "MODEL ms: bench/model.py, a latency "
        "model, not a measurement (trust it to about 2x). cuDNN: the algorithm torch.nn would run (get_algo)."
    )
    print(intro)
    plan_columns, plan_lines = _plans_table(plans)
    print(format_text(plan_columns, plan_lines))
    print()
    kernel_columns, kernel_table = _kernel_table(kernel_lines)
    print(format_text(kernel_columns, kernel_table))
    print()
    stack_intro = (
        f"{STACK_LAYERS}-layer stacks (stacks.csv), forward, MODEL: layer by layer as today, and as one wavefront "
        "launch as designed (layer l at step t - l; kernels/configs.py plan_wavefront) where every layer's "
        "slices fit on chip at once, and with the upper layers two steps behind (layer l at step t - 2l: an "
        "upper layer's W_ih dot runs during the barrier wait, model.overlapped_wavefront_step_seconds); "
        "built: the wavefront rnnfast runs (rnnfast/wavefront.py, every cell: one pass plan for every layer, "
        "two steps behind, W_ih on chip where it fits, else streamed from L2 during the wait), forward and "
        "forward+backward (model.lane_wavefront_ms); input size = hidden size."
    )
    print(stack_intro)
    stack_columns, stack_lines = _stack_table(stacks)
    print(format_text(stack_columns, stack_lines))
    print()
    step_intro = "One time step per pass (step-terms.csv), MODEL cycles of the critical program by term, and us."
    print(step_intro)
    step_lines = [list(row.values()) for row in step_terms]
    print(format_text(STEP_TERM_COLUMNS, step_lines))

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(plans, args.out / "plans.csv", PLAN_COLUMNS)
    write_csv(kernel_lines, args.out / "report-kernels.csv", list(kernel_lines[0]))
    write_csv(tiles, args.out / "report.csv", list(tiles[0]))
    write_csv(stacks, args.out / "stacks.csv", STACK_COLUMNS)
    write_csv(step_terms, args.out / "step-terms.csv", STEP_TERM_COLUMNS)
    markdown = [
        "# rnnfast plan and hardware report", "", intro, "", "## Plans (plans.csv)", "",
        format_markdown(plan_columns, plan_lines), "", "## Compiled kernels (report-kernels.csv)", "",
        format_markdown(kernel_columns, kernel_table), "", "## Tiles (report.csv)", "",
        format_markdown(list(tiles[0]), [list(row.values()) for row in tiles]), "",
        "## Stacks (stacks.csv)", "", stack_intro, "", format_markdown(stack_columns, stack_lines), "",
        "## Step terms (step-terms.csv)", "", step_intro, "", format_markdown(STEP_TERM_COLUMNS, step_lines),
    ]  # fmt: skip
    (args.out / "report.md").write_text("\n".join(markdown) + "\n")
    for name in ("plans.csv", "report-kernels.csv", "report.csv", "stacks.csv", "step-terms.csv", "report.md"):
        print(f"wrote {args.out / name}")
    clean = not any(row["approximate_instructions"] or row["spill_bytes"] for row in kernel_lines)
    return 0 if clean and all(row["fits"] for row in plans) else 1
