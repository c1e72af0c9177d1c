"""bench/summary.py: repeated runs of one grid summed up as each (case, mode)'s ratio to torch.nn, with its
median and range over the runs, and `python -m bench --repeat N` writing them (table, CSV, figure)."""

import csv

import pytest

from bench.__main__ import main
from bench.summary import summarize


def row(case, mode, provider, ms, cell="gru", batch=16, hidden=64):
    return dict(case=case, mode=mode, provider=provider, status="ok", median_ms=ms, cell=cell, batch=batch,
                hidden_size=hidden)  # fmt: skip


def test_ratios_within_each_run_then_their_median_and_range():
    runs = [
        [row("g", "forward+backward", "torch.nn", 10.0), row("g", "forward+backward", "rnnfast", 5.0)],
        [row("g", "forward+backward", "torch.nn", 20.0), row("g", "forward+backward", "rnnfast", 14.0)],
        [row("g", "forward+backward", "torch.nn", 10.0), row("g", "forward+backward", "rnnfast", 6.0)],
    ]
    (line,) = summarize(runs)
    assert (line["ratio_min"], line["ratio_median"], line["ratio_max"]) == pytest.approx((0.5, 0.6, 0.7))
    assert (line["torch.nn_ms"], line["rnnfast_ms"], line["runs"]) == (10.0, 6.0, 3)
    assert line["path"] == "scan"  # GRU training at B16 H64 on CPU: rnnfast's scan (rnnfast.dispatch)


def test_a_row_missing_from_one_run_is_left_out():
    runs = [
        [row("g", "inference", "torch.nn", 1.0), row("g", "inference", "rnnfast", 1.0)],
        [row("g", "inference", "torch.nn", 1.0)],
    ]
    assert summarize(runs) == []


def test_repeat_writes_every_run_and_the_summary(tmp_path):
    argv = ["--smoke", "--repeat", "2", "--cell", "gru", "--mode", "inference", "--provider", "torch.nn",
            "--provider", "rnnfast", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    stem = "cpu-smoke-gru-inference-torch.nn-rnnfast"
    for name in (f"{stem}-run1.json", f"{stem}-run2.json", f"{stem}-summary.md", f"{stem}-summary.png"):
        assert (tmp_path / name).exists(), name
    with (tmp_path / f"{stem}-summary.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert {line["case"] for line in lines} == {"gru-B2-T5-I8-H16-fp32", "gru-B3-T8-I8-H16-varlen-fp32"}
    assert all(line["runs"] == "2" and line["path"] == "native" for line in lines)
