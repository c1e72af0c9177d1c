"""Repeated runs of one grid summed up: per (case, mode), each run's ratio of rnnfast's time to torch.nn's,
and over the runs their median and range, as a table (markdown, CSV) and a figure (PNG). A ratio is taken
within one interleaved run, so load that comes and goes lands on both providers; the range across runs
is the spread a reader rerunning the command should expect."""

import csv
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from rnnfast.dispatch import choose_path

from .providers import BASELINE

SUMMARY_FIELDS = (
    "case", "mode", "path", "torch.nn_ms", "rnnfast_ms", "ratio_median", "ratio_min", "ratio_max", "runs",
)  # fmt: skip


def auto_path(row: dict) -> str:
    """The path rnnfast's default backend takes for a CPU row (rnnfast.dispatch, as the module asks it)."""
    return choose_path(
        None, torch.device("cpu"), torch.float32, cell=row["cell"], training=row["mode"] != "inference",
        varlen="-varlen-" in row["case"], batch=row["batch"], hidden_size=row["hidden_size"],
    )  # fmt: skip


def summarize(runs: Sequence[Sequence[dict]], provider: str = "rnnfast") -> list[dict]:
    """One line per (case, mode) measured in every run, in the first run's order."""
    per_key: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for rows in runs:
        ok = {(r["case"], r["mode"], r["provider"]): r for r in rows if r["status"] == "ok"}
        for (case, mode, name), row in ok.items():
            if name == provider and (case, mode, BASELINE) in ok:
                per_key.setdefault((case, mode), []).append((ok[case, mode, BASELINE], row))
    lines = []
    for (case, mode), pairs in per_key.items():
        if len(pairs) != len(runs):
            continue
        ratios = [mine["median_ms"] / base["median_ms"] for base, mine in pairs]
        lines.append(
            {
                "case": case,
                "mode": mode,
                "path": auto_path(pairs[0][1]) if provider == "rnnfast" else "",
                "torch.nn_ms": statistics.median(base["median_ms"] for base, _ in pairs),
                "rnnfast_ms": statistics.median(mine["median_ms"] for _, mine in pairs),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "runs": len(pairs),
            }
        )
    return lines


def _short(case: str) -> str:
    """lstm-B64-T100-I256-H256-fp32 -> lstm B64 T100 H256."""
    parts = case.split("-")
    return " ".join(part for part in parts if not part.startswith("I") and part not in ("fp32",))


def write_markdown(lines: Sequence[dict], metadata: dict, path: Path) -> None:
    header = [
        f"# {metadata['command']}",
        "",
        f"{metadata['device_name']} ({metadata.get('cpu_capability', '?')}), torch {metadata['torch']}, "
        f"{metadata['torch_num_threads']} threads, commit {metadata['git_commit'][:7]}, {metadata['date']}.",
        "Times: medians over the runs of each run's median (ms). Ratio: rnnfast's time / torch.nn's within one",
        "interleaved run; median and range over the runs.",
        "",
        "| case | mode | rnnfast runs | torch.nn ms | rnnfast ms | ratio (range) |",
        "|---|---|---|---|---|---|",
    ]
    body = [
        f"| {_short(line['case'])} | {line['mode']} | {line['path']} | {line['torch.nn_ms']:.3g} | "
        f"{line['rnnfast_ms']:.3g} | {line['ratio_median']:.2f}x ({line['ratio_min']:.2f}-{line['ratio_max']:.2f}) |"
        for line in lines
    ]
    path.write_text("\n".join([*header, *body]) + "\n")


def write_csv(lines: Sequence[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(lines)


def plot(lines: Sequence[dict], title: str, path: Path) -> None:
    """Horizontal bars: each line's median ratio, whiskers its range over the runs, a line at 1 (even)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{_short(line['case'])}, {line['mode']} ({line['path']})" for line in lines]
    medians = [line["ratio_median"] for line in lines]
    low = [line["ratio_median"] - line["ratio_min"] for line in lines]
    high = [line["ratio_max"] - line["ratio_median"] for line in lines]
    figure, ax = plt.subplots(figsize=(8, 0.45 * len(lines) + 1.4))
    positions = range(len(lines))[::-1]
    colors = ["tab:green" if m < 0.95 else "tab:gray" if m <= 1.05 else "tab:red" for m in medians]
    ax.barh(list(positions), medians, xerr=[low, high], color=colors, capsize=3)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.set_xlabel("rnnfast time / torch.nn time (lower is faster; whiskers: range over runs)")
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(runs: Sequence[Sequence[dict]], metadata: dict, out: Path, stem: str) -> list[Path]:
    lines = summarize(runs)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}-summary.md", out / f"{stem}-summary.csv", out / f"{stem}-summary.png"]
    write_markdown(lines, metadata, paths[0])
    write_csv(lines, paths[1])
    title = f"CPU: {metadata['device_name']}, {metadata['torch_num_threads']} threads, {len(runs)} runs"
    plot(lines, title, paths[2])
    return paths
