"""The benchmark harness and the hardware report work (no timings are checked: those belong in bench/)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
from rnnfast.kernels import lstm
from rnnfast.kernels.configs import plan_scan

import rnnfast
from bench import __main__ as cli
from bench import report, results
from bench.cases import MODES, smoke_grid
from bench.measure import saved_tensor_bytes
from bench.providers import BASELINE, PROVIDERS, RNNFAST_NAMES
from bench.run import run_grid

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_rows():
    return run_grid(smoke_grid(), PROVIDERS, MODES, CPU, min_run_time=0.001, progress=lambda line: None)


def test_smoke_grid_measures_every_provider_available_on_cpu(smoke_rows):
    for case in smoke_grid():
        rows = {(row["provider"], row["mode"]): row for row in smoke_rows if row["case"] == case.name}
        assert rows["rnnfast-triton", "all"]["status"] == "skipped"
        assert rows["rnnfast-triton", "all"]["reason"] == "needs CUDA"
        rnnfast_has_cell = getattr(rnnfast, RNNFAST_NAMES[case.cell], None) is not None
        providers = [BASELINE, "rnnfast", "rnnfast-torch"] if rnnfast_has_cell else [BASELINE]
        if not rnnfast_has_cell:
            assert rows["rnnfast-torch", "all"]["status"] == "skipped"
        for provider in providers:
            for mode in MODES:
                row = rows[provider, mode]
                assert row["status"] == "ok", row
                assert 0 < row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
                assert (row["saved_bytes"] is None) == (mode == "inference")
                assert (row["ratio"] is None) == (provider == BASELINE)


def test_smoke_lstm_rows_cover_all_modes(smoke_rows):
    measured = {(row["provider"], row["mode"]) for row in smoke_rows if row["cell"] == "lstm" and row["status"] == "ok"}
    assert measured == {(provider, mode) for provider in (BASELINE, "rnnfast", "rnnfast-torch") for mode in MODES}


def test_smoke_command_prints_table_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "RESULTS", tmp_path / "results")
    assert cli.main(["--smoke", "--cell", "rnn", "--mode", "inference"]) == 0
    printed = capsys.readouterr().out
    assert "torch.nn ms (p20-p80)" in printed
    assert "rnn-B2-T5-I8-H16-fp32" in printed
    assert not (tmp_path / "results").exists()


def test_out_writes_csv_json_markdown(tmp_path):
    assert cli.main(["--smoke", "--cell", "rnn", "--mode", "forward", "--out", str(tmp_path)]) == 0
    stem = tmp_path / "cpu-smoke-rnn-forward"
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["metadata"]["command"] == "python -m bench --smoke --cell rnn --mode forward --out " + str(tmp_path)
    assert saved["metadata"]["torch"] == torch.__version__
    assert saved["metadata"]["torch_num_threads"] == torch.get_num_threads()
    assert {row["mode"] for row in saved["rows"] if row["provider"] == BASELINE} == {"forward"}
    assert stem.with_suffix(".csv").read_text().startswith("case,cell,batch")
    assert "| case | mode |" in stem.with_suffix(".md").read_text()


def test_plot_draws_sweeps(tmp_path):
    rows = [
        {"case": f"lstm-H{h}", "cell": "lstm", "dtype": "float32", "batch": 4, "seq_len": 10, "hidden_size": h,
         "sweeps": "hidden", "mode": "inference", "provider": provider, "status": "ok", "median_ms": h / 64}
        for h in (64, 128) for provider in (BASELINE, "rnnfast-torch")
    ]  # fmt: skip
    assert results.plot(rows, "test", tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not results.plot([{**row, "sweeps": ""} for row in rows], "test", tmp_path / "none.png")


def test_saved_bytes_count_a_known_tensor_once():
    x = torch.randn(1000, requires_grad=True)
    w = torch.randn(1000, requires_grad=True)
    # exp saves its fp32 result (4000 bytes); the product saves two views of that same storage.
    assert saved_tensor_bytes(lambda: x.exp()) == 4000

    def halves_product():
        y = x.exp()
        return y[:500] * y[500:]

    assert saved_tensor_bytes(halves_product) == 4000
    assert saved_tensor_bytes(lambda: x * w) == 8000
    assert saved_tensor_bytes(lambda: x * w, exclude=[x]) == 4000
    assert saved_tensor_bytes(lambda: x.double().exp()) == 8000


def test_report_planner_rows_for_lstm():
    hidden_sizes, batch_sizes, seq_len = [64, 512], [1, 64], 100
    rows = report.plan_rows(["lstm"], [torch.float32], hidden_sizes, batch_sizes, seq_len)
    assert [row["hidden"] for row in rows] == hidden_sizes
    for row in rows:
        plan = plan_scan("lstm", row["hidden"], torch.float32)
        assert (row["variant"], row["block_b"], row["block_n"], row["block_k"], row["num_warps"]) == (
            plan.variant, plan.block_b, plan.block_n, plan.block_k, plan.num_warps,
        )  # fmt: skip
        launches = 1 if plan.variant == "persistent" else seq_len
        assert row["forward_launches"] == row["backward_launches"] == launches
        hidden_tiles = 1 if plan.variant == "persistent" else triton.cdiv(row["hidden"], plan.block_n)
        for batch in batch_sizes:
            assert row[f"programs_B{batch}"] == triton.cdiv(batch, plan.block_b) * hidden_tiles


def test_report_finds_the_lstm_kernels():
    assert report.kernel_cells()["lstm"] is lstm.SCAN_KERNELS


def test_report_compiles_a_small_config(tmp_path):
    # Offline compiles need Triton's real JIT functions, which the interpreter (on for this session) replaces.
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "bench", "report", "--cell", "lstm", "--dtype", "fp16", "--hidden", "16"]
    command += ["--batch", "1", "--arch", "90", "--kernel", "backward", "--out", str(tmp_path)]
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "report-kernels.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["cell"], row["dtype"], row["hidden"], row["kernel"], row["arch"]) == (
        "lstm", "fp16", "16", "backward", "sm_90",
    )  # fmt: skip
    assert 0 < int(row["registers"]) <= 255
    assert row["fits"] == str(int(row["registers"]) <= 255 and int(row["shared_bytes"]) <= 232448)
    with open(tmp_path / "report.csv") as f:
        (plan,) = list(csv.DictReader(f))
    assert plan["variant"] == plan_scan("lstm", 16, torch.float16).variant
    assert "## Planner choices" in (tmp_path / "report.md").read_text()
