"""Rows of a run, how they are printed, and the files they go to (CSV, JSON, markdown, PNG)."""

import csv
import datetime
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

import rnnfast

from .providers import BASELINE

REPO = Path(__file__).resolve().parent.parent
FIELDS = (
    "case", "cell", "batch", "seq_len", "input_size", "hidden_size", "num_layers", "bidirectional", "dtype",
    "sweeps", "mode", "provider", "status", "reason", "median_ms", "p20_ms", "p80_ms", "samples",
    "ratio", "saved_bytes", "saved_ratio", "peak_bytes", "model_ms",
)  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def _version(module_name: str) -> str:
    try:
        return __import__(module_name).__version__
    except ImportError:
        return "not installed"


def run_metadata(device: torch.device, argv: Sequence[str]) -> dict:
    """Where and how a run was made: enough to reproduce or to compare it."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench", *argv]),
        "device": device.type,
        "device_name": device_name(device),
        # The widest vector instructions torch's CPU kernels use (AVX2, AVX512): oneDNN's speed rests on it.
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else "",
        "torch_num_threads": torch.get_num_threads(),
        # Other work on the machine inflates CPU timings; the 1/5/15-minute load averages show how much.
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "rnnfast": rnnfast.__version__,
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        # Uncommitted changes in the measured code (other paths do not change the numbers).
        "git_dirty": bool(_git("status", "--porcelain", "--", "rnnfast")),
    }


def first_call_line(first_call: dict[str, tuple[float, float]]) -> str:
    timings = ", ".join(f"{name} {seconds:.2f} s, +{mb:.0f} MB" for name, (seconds, mb) in first_call.items())
    return f"First CPU call of an LSTM in a fresh process after `import torch` (imports included): {timings}"


def _ms(row: dict) -> str:
    return f"{row['median_ms']:.3g} ({row['p20_ms']:.3g}-{row['p80_ms']:.3g})"


def _mb(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / 2**20:.3g}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def table_columns(providers: Sequence[str], cuda: bool) -> list[str]:
    columns = ["case", "mode"]
    for provider in providers:
        columns.append(f"{provider} ms (p20-p80)")
        if provider != BASELINE:
            columns.append("vs torch.nn")
    for provider in providers:
        columns.append(f"{provider} saved MB")
        if provider != BASELINE:
            columns.append("vs torch.nn")
    if cuda:
        columns += [f"{provider} peak MB" for provider in providers]
    return columns


def table_rows(rows: Iterable[dict], providers: Sequence[str], cuda: bool) -> list[list[str]]:
    """One line per (case, mode), one column group per provider; a provider skipped for a case shows
    "skipped" (its reason in the footnotes)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    skipped: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["mode"] == "all":
            skipped[row["case"], row["provider"]] = row
        else:
            by_key.setdefault((row["case"], row["mode"]), {})[row["provider"]] = row
    cases = list(dict.fromkeys([case for case, _ in by_key] + [case for case, _ in skipped]))
    lines = []
    for case in cases:
        modes = [mode for (c, mode) in by_key if c == case] or ["all"]
        for mode in modes:
            cells = by_key.get((case, mode), {})
            time_cols, mem_cols, peak_cols = [], [], []
            for provider in providers:
                row = cells.get(provider) or skipped.get((case, provider))
                baseline = provider == BASELINE
                if row is None or row["status"] != "ok":
                    status = "-" if row is None else row["status"]
                    time_cols += [status] if baseline else [status, ""]
                    mem_cols += [""] if baseline else ["", ""]
                    peak_cols.append("")
                    continue
                time_cols += [_ms(row)] if baseline else [_ms(row), _ratio(row["ratio"])]
                mem_cols += (
                    [_mb(row["saved_bytes"])] if baseline else [_mb(row["saved_bytes"]), _ratio(row["saved_ratio"])]
                )
                peak_cols.append(_mb(row["peak_bytes"]))
            lines.append([case, mode, *time_cols, *mem_cols, *(peak_cols if cuda else [])])
    return lines


MODEL_COLUMNS = ["case", "mode", "provider", "measured ms", "MODEL ms", "measured / MODEL"]


def model_rows(rows: Iterable[dict]) -> list[list[str]]:
    """The measured rows the latency model describes (model_ms set), beside its figure."""
    return [
        [row["case"], row["mode"], row["provider"], f"{row['median_ms']:.3g}", f"{row['model_ms']:.3g}",
         f"{row['median_ms'] / row['model_ms']:.2f}"]
        for row in rows if row.get("model_ms") is not None
    ]  # fmt: skip


def footnotes(rows: Iterable[dict]) -> list[str]:
    """One line per distinct reason a provider was skipped or failed."""
    notes: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] != "ok":
            notes.setdefault(f"{row['provider']} {row['status']}: {row['reason']}", []).append(row["case"])
    return [f"{note} ({', '.join(dict.fromkeys(cases))})" for note, cases in notes.items()]


def format_text(columns: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *lines)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [columns, *lines]]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_markdown(columns: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    return "\n".join(out)


def write_csv(rows: Sequence[dict], path: Path, fields: Sequence[str] = FIELDS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows: Sequence[dict], metadata: dict, path: Path) -> None:
    path.write_text(json.dumps({"metadata": metadata, "rows": list(rows)}, indent=1) + "\n")


def write_markdown(rows: Sequence[dict], metadata: dict, providers: Sequence[str], path: Path) -> None:
    cuda = metadata["device"] == "cuda"
    header = [
        f"# rnnfast benchmark: {metadata['device_name']}",
        "",
        f"`{metadata['command']}` — {metadata['date']}, commit {metadata['git_commit'][:12]}"
        + (" (uncommitted changes in rnnfast/ or kernels/)" if metadata["git_dirty"] else ""),
        "",
        f"torch {metadata['torch']} ({metadata['torch_num_threads']} threads; load average "
        + f"{metadata['load_average'][0]} before, {metadata.get('load_average_after', ['?'])[0]} after), "
        + f"triton {metadata['triton']}, "
        + f"rnnfast {metadata['rnnfast']}, Python {metadata['python']}.",
        *([first_call_line(metadata["first_call"]) + ".", ""] if "first_call" in metadata else []),
        "Times: milliseconds per call, median (p20-p80). Saved MB: tensors autograd keeps for backward, "
        + "beyond inputs and parameters."
        + (" Peak MB: CUDA memory allocated above the start." if cuda else ""),
        "",
    ]
    body = format_markdown(table_columns(providers, cuda), table_rows(rows, providers, cuda))
    notes = [f"- {note}" for note in footnotes(rows)]
    modelled = model_rows(rows)
    model = [
        "", f"## Measured against the latency MODEL (bench/model.py, {metadata.get('model_gpu')} constants)", "",
        format_markdown(MODEL_COLUMNS, modelled),
    ] if modelled else []  # fmt: skip
    path.write_text("\n".join([*header, body, "", *notes, *model]) + "\n")


def plot(rows: Sequence[dict], title: str, path: Path) -> bool:
    """Time against hidden size and against sequence length, one panel per mode, a line per provider
    (and cell and dtype). False when the rows hold no sweep to plot."""
    ok = [row for row in rows if row["status"] == "ok"]
    axes_of = {"hidden": "hidden_size", "seq": "seq_len"}
    sweeps = [sweep for sweep in axes_of if any(sweep in row["sweeps"].split(";") for row in ok)]
    if not sweeps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(row["mode"] for row in ok))
    figure, axes = plt.subplots(len(sweeps), len(modes), figsize=(5 * len(modes), 4 * len(sweeps)), squeeze=False)
    for i, sweep in enumerate(sweeps):
        x_field = axes_of[sweep]
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            series: dict[tuple, list[tuple[int, float]]] = {}
            fixed = set()
            for row in ok:
                if row["mode"] == mode and sweep in row["sweeps"].split(";"):
                    series.setdefault((row["cell"], row["dtype"], row["provider"]), []).append(
                        (row[x_field], row["median_ms"])
                    )
                    other = ("seq_len", "T") if sweep == "hidden" else ("hidden_size", "H")
                    fixed.add(f"B{row['batch']} {other[1]}{row[other[0]]}")
            for (cell, dtype, provider), points in series.items():
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{cell} {dtype} {provider}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("hidden size (I = H)" if sweep == "hidden" else "sequence length")
            ax.set_ylabel("ms per call (median)")
            ax.set_title(f"{mode}, {', '.join(sorted(fixed))}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_all(rows: Sequence[dict], metadata: dict, providers: Sequence[str], out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv", out / f"{stem}.json", out / f"{stem}.md"]
    write_csv(rows, paths[0])
    write_json(rows, metadata, paths[1])
    write_markdown(rows, metadata, providers, paths[2])
    if plot(rows, f"rnnfast vs torch.nn: {metadata['device_name']}", out / f"{stem}.png"):
        paths.append(out / f"{stem}.png")
    return paths
