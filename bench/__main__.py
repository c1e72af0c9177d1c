"""python -m bench [options]: rnnfast against torch.nn.  python -m bench report [options]: hardware report."""

import argparse
import os
import sys
from pathlib import Path

import torch

from .cases import CELLS, GRIDS, MODES
from .providers import PROVIDER_NAMES, PROVIDERS
from .results import (
    MODEL_COLUMNS,
    first_call_line,
    footnotes,
    format_text,
    model_rows,
    run_metadata,
    table_columns,
    table_rows,
    write_all,
    write_csv,
    write_json,
)

RESULTS = Path(__file__).resolve().parent / "results"


def bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time and memory of rnnfast's layers against torch.nn. `python -m bench report` prints "
        "the planner's kernel choices and their compiled resources instead.",
    )
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--smoke", action="store_true", help="tiny grid in seconds; writes files only with --out")
    grid.add_argument("--full", action="store_true", help="the large grid, meant for a GPU")
    grid.add_argument("--targets", action="store_true", help="CPU: only the README's target shapes, every cell")
    grid.add_argument(
        "--dispatch", action="store_true", help="CPU: the shapes the auto backend's native-or-scan rules come from"
    )
    grid.add_argument("--readme", action="store_true", help="CPU: the README's rows (use with --repeat)")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run the grid N times; files per run (-runI) and a summary of the ratios' spread (-summary.md/png)",
    )  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--cell", action="append", choices=CELLS, help="only this cell (repeatable)")
    parser.add_argument("--mode", action="append", choices=MODES, help="only this mode (repeatable)")
    parser.add_argument("--provider", action="append", choices=PROVIDER_NAMES, help="only this provider (repeatable)")
    parser.add_argument("--min-run-time", type=float, help="CPU: seconds of timed runs per measurement (default "
                        "0.5; 0.01 with --smoke); slow calls get at least 5 runs")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads for the run (default: torch's own choice; recorded)"
    )
    parser.add_argument(
        "--out", type=Path, help=f"folder for CSV/JSON/markdown/PNG (default {RESULTS}, none with --smoke)"
    )
    parser.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="start no case after this many seconds (the rest are listed as skipped); with files written, "
        "the CSV and JSON are rewritten after every case, so a run cut short keeps what it measured",
    )  # fmt: skip
    return parser


def main_bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    from .run import add_model, model_gpu, run_grid

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    chosen = [name for name in ("smoke", "full", "targets", "dispatch", "readme") if getattr(args, name)]
    grid_name = chosen[0] if chosen else "default"
    cases = [case for case in GRIDS[grid_name]() if args.cell is None or case.cell in args.cell]
    modes = [mode for mode in MODES if args.mode is None or mode in args.mode]
    providers = [p for p in PROVIDERS if args.provider is None or p.name in args.provider]
    min_run_time = args.min_run_time if args.min_run_time is not None else 0.01 if args.smoke else 0.5

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    metadata = run_metadata(device, argv)
    print(metadata["command"])
    print(
        f"{metadata['device_name']}, torch {metadata['torch']} ({metadata['torch_num_threads']} threads), "
        f"triton {metadata['triton']}, rnnfast {metadata['rnnfast']}"
    )
    if device.type == "cpu" and not args.smoke:
        from .measure import FIRST_CALL_BUILDS, first_call

        metadata["first_call"] = {name: first_call(name) for name in FIRST_CALL_BUILDS}
        print(first_call_line(metadata["first_call"]))
    out = args.out if args.out is not None or args.smoke else RESULTS
    filters = [*(args.cell or []), *(args.mode or []), *(args.provider or [])]
    stem = "-".join([device.type, grid_name, *filters]).replace("+", "_")
    gpu = model_gpu(device)
    metadata["model_gpu"] = gpu

    runs = []
    for run in range(1, args.repeat + 1):
        run_stem = stem if args.repeat == 1 else f"{stem}-run{run}"

        def case_done(rows: list[dict], run_stem=run_stem) -> None:
            if gpu is not None:
                add_model(rows, gpu)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                write_csv(rows, out / f"{run_stem}.csv")
                write_json(rows, metadata, out / f"{run_stem}.json")

        rows = run_grid(
            cases, providers, modes, device, min_run_time, time_budget=args.time_budget, case_done=case_done
        )
        if gpu is not None:
            add_model(rows, gpu)
        runs.append(rows)
    metadata["load_average_after"] = [round(load, 2) for load in os.getloadavg()]

    # A provider skipped on every case (rnnfast-triton on a CPU) gets a footnote, not empty columns.
    names = [p.name for p in providers if any(row["provider"] == p.name and row["status"] != "skipped" for row in rows)]
    print(format_text(table_columns(names, device.type == "cuda"), table_rows(rows, names, device.type == "cuda")))
    for note in footnotes(rows):
        print(f"  {note}")
    if model_rows(rows):
        print(f"\nMeasured against the latency MODEL (bench/model.py, {gpu} constants):")
        print(format_text(MODEL_COLUMNS, model_rows(rows)))

    if out is not None:
        for run, rows_of_run in enumerate(runs, 1):
            for path in write_all(rows_of_run, metadata, names, out, stem if args.repeat == 1 else f"{stem}-run{run}"):
                print(f"wrote {path}")
    if args.repeat > 1 and out is not None:
        from .summary import write_summary

        paths = write_summary(runs, metadata, out, stem)
        print(paths[0].read_text())
        for path in paths:
            print(f"wrote {path}")
    errors = [row for run_rows in runs for row in run_rows if row["status"] == "error"]
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from .report import main_report

        return main_report(argv[1:])
    return main_bench(argv)


if __name__ == "__main__":
    sys.exit(main())
