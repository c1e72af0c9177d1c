"""Hardware report: for each cell with Triton kernels, dtype and hidden size, the planner's choice, the
launches and programs it makes, and what its compiled kernels use on sm_80 and sm_90.

Compiles run offline (no GPU): Triton builds a cubin for the target and cuobjdump reads its registers and
stack (spills). Only distinct (plan, kernel, constexprs) are compiled, and Triton's on-disk cache makes a
second report quick.
"""

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import triton

from .cases import DTYPE_NAMES
from .results import format_markdown, format_text, run_metadata, write_csv

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN_SIZES = (1, 17, 64, 100, 128, 256, 257, 512, 768, 1024)
BATCH_SIZES = (1, 16, 64, 256)
ARCHS = (80, 90)
SEQ_LEN = 1024
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
# The kernels one layer-direction launches, as (label, pass, constexprs for both directions).
KERNELS = (
    ("forward-training", "forward", ({"REVERSE": 0, "TRAINING": True}, {"REVERSE": 1, "TRAINING": True})),
    ("forward-inference", "forward", ({"REVERSE": 0, "TRAINING": False}, {"REVERSE": 1, "TRAINING": False})),
    ("backward", "backward", ({"REVERSE": 0}, {"REVERSE": 1})),
)


def kernel_cells() -> dict[str, dict]:
    """SCAN_KERNELS of every cell module in rnnfast.kernels that has one, by module name (lstm, gru, ...)."""
    from rnnfast import kernels

    cells = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"{kernels.__name__}.{info.name}")
        if hasattr(module, "SCAN_KERNELS"):
            cells[info.name] = module.SCAN_KERNELS
    return cells


def programs_per_launch(plan, batch: int, hidden: int) -> int:
    """Grid size of one launch (kernels/launch.py): batch tiles, times hidden tiles for the step variant."""
    tiles = triton.cdiv(batch, plan.block_b)
    return tiles if plan.variant == "persistent" else tiles * triton.cdiv(hidden, plan.block_n)


def plan_rows(
    cells: Sequence[str], dtypes: Sequence[torch.dtype], hidden_sizes: Sequence[int], batch_sizes: Sequence[int],
    seq_len: int,
) -> list[dict]:  # fmt: skip
    """The planner's choice per cell, dtype and hidden size: variant, tiles, warps, launches per
    layer-direction at `seq_len`, and programs per launch at each batch size."""
    from rnnfast.kernels.configs import plan_scan

    rows = []
    for cell in cells:
        for dtype in dtypes:
            for hidden in hidden_sizes:
                plan = plan_scan(cell, hidden, dtype)
                row = {
                    "cell": cell, "dtype": DTYPE_NAMES[dtype], "hidden": hidden, "variant": plan.variant,
                    "block_b": plan.block_b, "block_n": plan.block_n, "block_k": plan.block_k,
                    "num_warps": plan.num_warps, "seq_len": seq_len,
                    "forward_launches": plan.launches(seq_len), "backward_launches": plan.launches(seq_len),
                }  # fmt: skip
                for batch in batch_sizes:
                    row[f"programs_B{batch}"] = programs_per_launch(plan, batch, hidden)
                rows.append(row)
    return rows


def resource_rows(
    scan_kernels: dict[str, dict],
    dtypes: Sequence[torch.dtype],
    hidden_sizes: Sequence[int],
    archs: Sequence[int],
    kernels: Sequence[tuple] = KERNELS,
) -> list[dict]:
    """Compiled resources of each distinct kernel the planner launches, per cell, dtype and arch: the
    larger of the forward-in-time and reversed kernels, and whether both fit."""
    from rnnfast.kernels import hardware
    from rnnfast.kernels.configs import plan_scan

    rows = []
    for cell, cell_kernels in scan_kernels.items():
        for dtype in dtypes:
            plans: dict = {}
            for hidden in hidden_sizes:
                plans.setdefault(plan_scan(cell, hidden, dtype), []).append(hidden)
            for plan, hiddens in plans.items():
                for label, scan_pass, directions in kernels:
                    kernel, fp32_pointers = cell_kernels[scan_pass, plan.variant]
                    for arch in archs:
                        used = [
                            hardware.compile_scan_kernel(kernel, fp32_pointers, plan, dtype, arch, **constexprs)
                            for constexprs in directions
                        ]
                        rows.append({
                            "cell": cell, "dtype": DTYPE_NAMES[dtype], "hidden": " ".join(map(str, hiddens)),
                            "variant": plan.variant, "block_b": plan.block_b, "block_n": plan.block_n,
                            "block_k": plan.block_k, "num_warps": plan.num_warps, "kernel": label,
                            "arch": f"sm_{arch}", "registers": max(r.registers for r in used),
                            "spill_bytes": max(r.spill_bytes for r in used),
                            "shared_bytes": max(r.shared_bytes for r in used),
                            "fits": all(r.fits(arch) for r in used),
                        })  # fmt: skip
    return rows


def summarize(plans: list[dict], resources: list[dict], archs: Sequence[int]) -> None:
    """Adds to each planner row, per arch, the worst of its kernels: registers, spills, shared memory, fits."""
    for row in plans:
        for arch in archs:
            used = [
                r for r in resources
                if (r["cell"], r["dtype"], r["arch"]) == (row["cell"], row["dtype"], f"sm_{arch}")
                and str(row["hidden"]) in r["hidden"].split()
            ]  # fmt: skip
            row[f"sm_{arch}_registers"] = max(r["registers"] for r in used)
            row[f"sm_{arch}_spill_bytes"] = max(r["spill_bytes"] for r in used)
            row[f"sm_{arch}_shared_bytes"] = max(r["shared_bytes"] for r in used)
            row[f"sm_{arch}_fits"] = all(r["fits"] for r in used)


def _plan_table(plans: list[dict], batch_sizes: Sequence[int], archs: Sequence[int], seq_len: int):
    columns = ["cell", "dtype", "H", "variant", "BLOCK B/N/K", "warps", f"launches fwd/bwd (T={seq_len})"]
    columns += [f"programs B={batch}" for batch in batch_sizes]
    columns += [f"sm_{arch} regs/spill/smem" for arch in archs] + ["fits"]
    lines = []
    for row in plans:
        line = [
            row["cell"], row["dtype"], row["hidden"], row["variant"],
            f"{row['block_b']}/{row['block_n']}/{row['block_k']}", row["num_warps"],
            f"{row['forward_launches']}/{row['backward_launches']}",
        ]  # fmt: skip
        line += [row[f"programs_B{batch}"] for batch in batch_sizes]
        line += [
            f"{row[f'sm_{a}_registers']}/{row[f'sm_{a}_spill_bytes']} B/{row[f'sm_{a}_shared_bytes'] / 1024:.0f} KB"
            for a in archs
        ]
        unfit = [f"sm_{a}" for a in archs if not row[f"sm_{a}_fits"]]
        spills = max(row[f"sm_{a}_spill_bytes"] for a in archs)
        line.append(_fits_note(not unfit, spills) + (f" on {', '.join(unfit)}" if unfit else ""))
        lines.append(line)
    return columns, lines


def _fits_note(fits: bool, spill_bytes: int) -> str:
    note = "yes" if fits else "NO"
    return f"{note} (spills {spill_bytes} B)" if spill_bytes else note


def _kernel_table(resources: list[dict], archs: Sequence[int]):
    """One line per kernel, a column group per arch."""
    columns = ["cell", "dtype", "H", "variant", "BLOCK B/N/K", "warps", "kernel"]
    columns += [f"sm_{arch} {what}" for arch in archs for what in ("regs", "spill B", "smem B", "fits")]
    lines: dict[tuple, list] = {}
    for r in resources:
        key = (r["cell"], r["dtype"], r["hidden"], r["kernel"])
        line = lines.setdefault(key, [
            r["cell"], r["dtype"], r["hidden"], r["variant"], f"{r['block_b']}/{r['block_n']}/{r['block_k']}",
            r["num_warps"], r["kernel"],
        ])  # fmt: skip
        line += [r["registers"], r["spill_bytes"], r["shared_bytes"], _fits_note(r["fits"], r["spill_bytes"])]
    return columns, list(lines.values())


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Planner choices and compiled kernel resources (registers, spills, shared memory) on "
        "sm_80/sm_90, compiled offline: no GPU needed.",
    )
    parser.add_argument("--cell", action="append", help="only this kernel module (lstm, gru, elman; repeatable)")
    parser.add_argument("--dtype", action="append", choices=list(DTYPES), help="only this dtype (repeatable)")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN_SIZES), help="hidden sizes")
    parser.add_argument("--batch", type=int, nargs="+", default=list(BATCH_SIZES), help="batch sizes")
    parser.add_argument("--arch", type=int, action="append", choices=ARCHS, help="only this sm_ arch (repeatable)")
    parser.add_argument(
        "--kernel", action="append", choices=[label for label, _, _ in KERNELS], help="only this kernel (repeatable)"
    )
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help="T for the launch counts (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for report.csv, report-kernels.csv, report.md"
    )
    return parser


def main_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    available = kernel_cells()
    unknown = sorted(set(args.cell or []) - set(available))
    if unknown:
        print(f"no SCAN_KERNELS in rnnfast.kernels for {unknown}; available: {sorted(available)}", file=sys.stderr)
        return 2
    scan_kernels = {cell: kernels for cell, kernels in available.items() if args.cell is None or cell in args.cell}
    dtypes = [DTYPES[name] for name in args.dtype or DTYPES]
    archs = sorted(args.arch or ARCHS)

    plans = plan_rows(list(scan_kernels), dtypes, args.hidden, args.batch, args.seq_len)
    kernels = [entry for entry in KERNELS if args.kernel is None or entry[0] in args.kernel]
    resources = resource_rows(scan_kernels, dtypes, args.hidden, archs, kernels)
    summarize(plans, resources, archs)
    plan_columns, plan_lines = _plan_table(plans, args.batch, archs, args.seq_len)
    kernel_columns, kernel_lines = _kernel_table(resources, archs)

    metadata = run_metadata(torch.device("cpu"), ["report", *argv])
    intro = (
        f"{metadata['command']} — triton {metadata['triton']}, torch {metadata['torch']}, commit "
        f"{metadata['git_commit'][:12]}, {metadata['date']}. Launches are per layer and direction; programs "
        "per launch at each batch size; regs/spill/smem: the worst of the layer's kernels (registers per "
        "thread, spilled bytes per thread, shared memory per block)."
    )
    print(intro)
    print(format_text(plan_columns, plan_lines))
    print()
    print(format_text(kernel_columns, kernel_lines))

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(plans, args.out / "report.csv", list(plans[0]))
    write_csv(resources, args.out / "report-kernels.csv", list(resources[0]))
    markdown = [
        "# rnnfast hardware report",
        "",
        intro,
        "",
        "## Planner choices",
        "",
        format_markdown(plan_columns, plan_lines),
        "",
        "## Compiled kernels",
        "",
        format_markdown(kernel_columns, kernel_lines),
    ]
    (args.out / "report.md").write_text("\n".join(markdown) + "\n")
    for name in ("report.csv", "report-kernels.csv", "report.md"):
        print(f"wrote {args.out / name}")
    unfit = [row for row in resources if not row["fits"]]
    return 1 if unfit else 0
