"""The benchmark harness and the hardware report work (no timings are checked: those belong in bench/)."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import __main__ as cli
from bench import report, results, run
from bench.cases import MODES, smoke_grid
from bench.measure import saved_tensor_bytes
from bench.providers import BASELINE, PROVIDERS
from bench.run import run_grid

# Its expensive module fixtures are made once: pytest-xdist runs this module on one worker.
pytestmark = pytest.mark.xdist_group("test_bench")

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
        for provider in (BASELINE, "rnnfast", "rnnfast-scan"):
            for mode in MODES:
                row = rows[provider, mode]
                assert row["status"] == "ok", row
                assert 0 < row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
                assert (row["saved_bytes"] is None) == (mode == "inference")
                assert (row["ratio"] is None) == (provider == BASELINE)


def test_smoke_lstm_rows_cover_all_modes(smoke_rows):
    measured = {(row["provider"], row["mode"]) for row in smoke_rows if row["cell"] == "lstm" and row["status"] == "ok"}
    assert measured == {(provider, mode) for provider in (BASELINE, "rnnfast", "rnnfast-scan") for mode in MODES}


def test_smoke_command_prints_table_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "RESULTS", tmp_path / "results")
    assert cli.main(["--smoke", "--cell", "rnn_tanh", "--mode", "inference"]) == 0
    printed = capsys.readouterr().out
    assert "torch.nn ms (p20-p80)" in printed
    assert "rnn_tanh-B2-T5-I8-H16-fp32" in printed
    assert not (tmp_path / "results").exists()


def test_out_writes_csv_json_markdown(tmp_path):
    assert cli.main(["--smoke", "--cell", "rnn_tanh", "--mode", "forward", "--out", str(tmp_path)]) == 0
    stem = tmp_path / "cpu-smoke-rnn_tanh-forward"
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["metadata"]["command"] == f"python -m bench --smoke --cell rnn_tanh --mode forward --out {tmp_path}"
    assert saved["metadata"]["torch"] == torch.__version__
    assert saved["metadata"]["torch_num_threads"] == torch.get_num_threads()
    assert {row["mode"] for row in saved["rows"] if row["provider"] == BASELINE} == {"forward"}
    assert stem.with_suffix(".csv").read_text().startswith("case,cell,batch")
    assert "| case | mode |" in stem.with_suffix(".md").read_text()


def test_plot_draws_sweeps(tmp_path):
    rows = [
        {"case": f"lstm-H{h}", "cell": "lstm", "dtype": "float32", "batch": 4, "seq_len": 10, "hidden_size": h,
         "sweeps": "hidden", "mode": "inference", "provider": provider, "status": "ok", "median_ms": h / 64}
        for h in (64, 128) for provider in (BASELINE, "rnnfast-scan")
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


def test_report_plan_quantities_by_hand():
    # H64 fp32 B1 on an H100: forward 16 programs of 4 units (a dot 16 columns wide), backward 4 programs of
    # 16 units; every slice stays on chip and one launch runs each pass.
    small = report.plan_quantities("lstm", 64, 1, torch.float32, seq_len=100, gpu="h100")
    assert (small["variant"], small["programs"], small["launches_forward"], small["launches_backward"]) == (
        "grid_sync", 16, 1, 1,
    )  # fmt: skip
    assert small["weight_bytes_per_step"] == 0
    forward, backward = small["forward"], small["backward"]
    assert (forward.programs, backward.programs, forward.barriers_per_step) == (16, 4, 1)
    # Each step: the [16, 64] operand from L2, the [64, 16] slice (4 units x 4 gates) from shared memory.
    assert forward.l2_bytes_per_step == 16 * 64 * 4 and forward.shared_bytes_per_step == 64 * 16 * 4
    assert forward.dot_flops_per_step == 2 * 16 * 64 * 16 and forward.l2_round_trips_per_step == 1
    # Backward: K = 4H = 256 over the gate gradients, 16 columns.
    assert backward.l2_bytes_per_step == 16 * 256 * 4 and backward.dot_flops_per_step == 2 * 16 * 256 * 16
    # Without the grid barrier: one launch per step, and every launch reloads the slices.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNFAST_NO_GRID_SYNC", "1")
        fallback = report.plan_quantities("lstm", 64, 1, torch.float32, seq_len=100, gpu="h100")
    assert (fallback["variant"], fallback["launches_forward"], fallback["launches_backward"]) == ("step", 100, 100)
    assert fallback["weight_bytes_per_step"] == 4 * 64 * 16 * 4 == 64 * 64 * 4
    assert fallback["forward"].l2_bytes_per_step == 16 * 64 * 4 + 64 * 16 * 4
    # H4096 fp16: the slices do not fit on chip; they stream from L2 in chunks of 64 rows of K.
    large = report.plan_quantities("lstm", 4096, 16, torch.float16, seq_len=100, gpu="h100")
    assert large["variant"] == "grid_sync" and large["weight_bytes_per_step"] > 0
    assert large["forward"].chunks_per_step == large["forward"].l2_round_trips_per_step == 4096 // 64


def test_report_writes_plans_csv(tmp_path):
    # Offline compiles need Triton's real JIT functions, which the interpreter (on for this session) replaces.
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "bench", "report", "--cell", "lstm", "--cell", "rnn_relu", "--dtype", "fp16"]
    command += ["--hidden", "16", "--batch", "1", "8", "--gpu", "a100", "--kernel", "backward", "--seq-len", "8"]
    command += ["--directions", "1", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "plans.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    required = (
        "cell, dtype, hidden, batch, gpu, directions, variant, programs, launches_forward, launches_backward, "
        "weight_bytes_per_step, registers, spill_bytes, shared_bytes, fits, specialized, model_forward_ms, "
        "model_forward_backward_ms, cudnn_algorithm"
    ).split(", ")
    assert set(required) <= set(reader.fieldnames)
    assert [(r["cell"], r["batch"], r["directions"]) for r in rows] == [
        (cell, batch, directions) for cell in ("lstm", "rnn_relu") for batch in "18" for directions in "12"
    ]
    for row in rows:
        assert (row["dtype"], row["hidden"], row["gpu"], row["variant"]) == ("fp16", "16", "a100", "grid_sync")
        assert (row["launches_forward"], row["launches_backward"], row["weight_bytes_per_step"]) == ("1", "1", "0")
        assert 0 < int(row["registers"]) <= 255 and row["fits"] == "True"
        assert 0 < float(row["model_forward_ms"]) < float(row["model_forward_backward_ms"])
        assert row["cudnn_algorithm"] == "PERSIST_STATIC_SMALL_H"
    # Batch 1 is a constant of the launched kernel, batch 8 is neither 1 nor a multiple of 16.
    lstm = [row["specialized"] for row in rows[:4:2]]
    assert lstm == ["B=1, H%16, pointers%16 13/13", "H%16, pointers%16 13/13"]
    # A bidirectional layer runs both directions in each launch: twice the programs.
    assert [int(rows[1]["programs"]), int(rows[3]["programs"])] == [
        2 * int(rows[0]["programs"]),
        2 * int(rows[2]["programs"]),
    ]
    with open(tmp_path / "report-kernels.csv") as f:
        kernels = list(csv.DictReader(f))
    assert {(k["cell"], k["arch"], k["kernel"]) for k in kernels} == {
        ("lstm", "sm_80", "backward"), ("rnn_relu", "sm_80", "backward"),
    }  # fmt: skip
    assert "MODEL" in (tmp_path / "report.md").read_text()
    with open(tmp_path / "stacks.csv") as f:
        stacks = list(csv.DictReader(f))
    assert [(r["cell"], r["batch"], r["directions"], r["num_layers"]) for r in stacks] == [
        (r["cell"], r["batch"], r["directions"], "2") for r in rows
    ]
    with open(tmp_path / "step-terms.csv") as f:
        assert [r["pass"] for r in csv.DictReader(f)] == ["forward", "backward"] * len(rows)


def test_time_budget_skips_the_cases_not_started(tmp_path):
    """Once the budget is spent no case starts: the rest are listed as skipped, and the files hold them."""
    done = []
    rows = run_grid(smoke_grid()[:2], PROVIDERS[:2], ["inference"], CPU, 0.001, lambda line: None, 0.0, done.append)
    assert not done
    assert {(row["status"], row["reason"]) for row in rows} == {("skipped", "time budget of 0 s spent")}
    argv = ["--smoke", "--cell", "gru", "--mode", "inference", "--time-budget", "0", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    with open(tmp_path / "cpu-smoke-gru-inference.csv") as f:
        assert {row["status"] for row in csv.DictReader(f)} == {"skipped"}


def test_results_rewritten_after_every_case(tmp_path, monkeypatch):
    """With files to write, a run cut short (a GPU lent for minutes) keeps the cases it finished."""
    seen = []
    original = cli.write_csv

    def spy(rows, path, *args):
        seen.append(len({row["case"] for row in rows}))
        original(rows, path, *args)

    monkeypatch.setattr(cli, "write_csv", spy)
    assert cli.main(["--smoke", "--cell", "lstm", "--mode", "inference", "--out", str(tmp_path)]) == 0
    assert seen == [1, 2]  # the smoke grid's two LSTM cases, one after the other


def test_full_grid_starts_with_issue_11s_target():
    from bench.cases import FLASHRNN_CASE, WAVEFRONT_CASES, full_grid

    first = full_grid()[: 4 + len(WAVEFRONT_CASES)]
    assert [(c.cell, c.batch, c.seq_len, c.hidden_size, c.dtype) for c in first[:3]] == [
        ("lstm", 16, 1024, hidden, torch.float16) for hidden in (768, 256, 64)
    ]
    assert first[3] == FLASHRNN_CASE
    # Then issue 26's 2-layer stacks, run as wavefronts.
    assert first[4:] == WAVEFRONT_CASES and all(c.num_layers == 2 and not c.bidirectional for c in first[4:])


def test_model_beside_gpu_measurements(tmp_path):
    """On a GPU, rnnfast's rows of one-layer fixed-length cases get the latency model's figure (plans.csv's),
    forward for inference and forward, forward+backward for that mode; no other row gets one."""
    from bench.cases import Case
    from bench.run import add_model

    target = Case("lstm", 16, 1024, 768, 768, dtype=torch.float16)
    deep = Case("lstm", 16, 1024, 768, 768, num_layers=2, dtype=torch.float16)
    varlen = Case("gru", 64, 100, 256, 256, bidirectional=True, varlen=True)
    rows = []
    for case in (target, deep, varlen):
        for provider in ("torch.nn", "rnnfast", "rnnfast-triton"):
            for mode in MODES:
                rows.append(dict(run._empty_row(case, next(p for p in PROVIDERS if p.name == provider), mode, "ok"),
                                 median_ms=3.0, p20_ms=2.9, p80_ms=3.1))  # fmt: skip
    add_model(rows, "h100")
    forward, total = report.model_layer_ms("lstm", 768, 16, "fp16", 1024, "h100")
    plans = report.plan_rows(["lstm"], ["fp16"], [768], [16], ["h100"], 1024)[0]
    assert (round(forward, 3), round(total, 3)) == (plans["model_forward_ms"], plans["model_forward_backward_ms"])
    modelled = {(row["case"], row["provider"], row["mode"]): row["model_ms"] for row in rows if row["model_ms"]}
    assert modelled == {
        (target.name, provider, mode): total if mode == "forward+backward" else forward
        for provider in ("rnnfast", "rnnfast-triton") for mode in MODES
    }  # fmt: skip
    lines = results.model_rows(rows)
    assert len(lines) == 6 and lines[0][3:] == ["3", f"{forward:.3g}", f"{3.0 / forward:.2f}"]
    metadata = results.run_metadata(CPU, ["--full"]) | {"device": "cuda", "model_gpu": "h100"}
    results.write_markdown(rows, metadata, ["torch.nn", "rnnfast", "rnnfast-triton"], tmp_path / "gpu.md")
    written = (tmp_path / "gpu.md").read_text()
    assert "## Measured against the latency MODEL (bench/model.py, h100 constants)" in written
    assert f"| {target.name} | forward | rnnfast | 3 | {forward:.3g} |" in written


def test_gpu_session_script_refuses_a_machine_without_a_gpu(tmp_path):
    """bench/gpu.sh, the one call a lent GPU gets, stops before installing anything where there is none."""
    env = {**os.environ, "OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh")], capture_output=True, text=True, env=env)
    assert run.returncode == 2 and "not a GPU machine" in run.stderr
    assert not (tmp_path / "install.log").exists()


SHARDED_TESTS = """
import time

def test_a(): pass
def test_b(): pass
def test_c(): assert False, "fails on purpose"
def test_d(): time.sleep(120)
def test_e(): pass
"""


def test_pytest_shards_run_every_test_once_and_summarise(tmp_path):
    """bench/pytest_shards.sh, which bench/gpu.sh runs tests/test_cuda.py with: every selected test in one
    of the shards, the failures listed, and a shard past TEST_S stopped with what it ran."""
    (tmp_path / "test_sharded.py").write_text(SHARDED_TESTS)
    env = {**os.environ, "SHARDS": "2", "TEST_S": "15"}
    script = REPO / "bench" / "pytest_shards.sh"
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(script), str(out), "demo", "-p", "no:cacheprovider", "test_sharded.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    ids = (out / "demo.ids").read_text().split()
    assert ids == [f"test_sharded.py::test_{name}" for name in "abcde"]
    summary = (out / "demo.log").read_text()
    assert summary.startswith("demo: 5 tests in 2 shards\n")
    assert "FAILED test_sharded.py::test_c - AssertionError: fails on purpose" in summary
    # Shard 0 runs tests 2 and 4 (b, d), shard 1 tests 1, 3 and 5 (a, c, e).
    assert "demo.0.log: 1 passed" in summary and "shard 0 stopped at 15 s" in summary
    assert "demo.1.log: 1 failed, 2 passed" in summary and "shard 1 exit status 1\n" in summary


def test_plans_give_cudnn_standards_floor_where_torch_nn_runs_it():
    rows = report.plan_rows(["lstm"], ["fp16", "bf16"], [768], [16], ["h100"], 1024, directions=(1, 2))
    by = {(row["dtype"], row["directions"]): row for row in rows}
    assert by["fp16", 1]["cudnn_algorithm"] == "PERSIST_STATIC"
    assert by["fp16", 1]["cudnn_standard_floor_forward_ms"] is None
    for key in (("fp16", 2), ("bf16", 1), ("bf16", 2)):
        row = by[key]
        assert row["cudnn_algorithm"] == row["cudnn_algorithm_backward"] == "STANDARD"
        floor = report.model.cudnn_standard_floor_ms(4, 1024, 16, 768, 2, "h100", key[1])
        assert (row["cudnn_standard_floor_forward_ms"], row["cudnn_standard_floor_forward_backward_ms"]) == tuple(
            round(value, 3) for value in floor
        )


def test_model_wavefront_step_by_hand():
    """A wavefront step (issue 26 item 1): the slowest layer's program, the waves of all programs over the
    SMs, one barrier."""
    gpu = report.model.GPUS["h100"]

    def work(programs: int, tiles: int) -> report.model.PassWork:
        return report.model.PassWork(programs, 1, 1, tiles, 0, 0, 0, 0, 0, 0, 0, True)

    layers = [work(48, 1), work(48, 2)]
    expected = 2 * report.model.TILE_CYCLES / gpu.clock_hz + report.model.BARRIER_S
    assert report.model.wavefront_step_seconds(layers, gpu) == pytest.approx(expected)
    # Past the SMs the programs take two waves.
    crowded = [work(100, 1), work(100, 2)]
    expected = 2 * 2 * report.model.TILE_CYCLES / gpu.clock_hz + report.model.BARRIER_S
    assert report.model.wavefront_step_seconds(crowded, gpu) == pytest.approx(expected)


def test_wavefront_charges_t_plus_l_minus_1_steps():
    """Issue 26's first target shape: a 2-layer LSTM, B16 T1024 H768 fp16 on an H100. Both layers' slices
    fit on chip at once (48 + 48 programs of 132 SMs, the upper layer's W_ih and W_hh stacked: K = 2H), and
    the MODEL charges layer 0's projection, one launch and T + L - 1 wavefront steps."""
    from rnnfast.kernels.configs import GPUS, plan_wavefront, planning_for

    with planning_for("h100"):
        plan = plan_wavefront("lstm", 768, 16, torch.float16, 2)
    assert plan.wavefront and plan.programs == 96 <= GPUS["h100"].sm_count
    assert plan.first.stationary and plan.upper.stationary
    assert sum(plan.first.k_pieces) == 768 and sum(plan.upper.k_pieces) == 2 * 768
    assert plan.barrier_steps(1024) == 1025
    gpu = report.model.GPUS["h100"]
    first = report.pass_work(plan.first, 768, 1, True, 2)
    upper = report.pass_work(plan.upper, 2 * 768, 1, True, 2)
    step = report.model.wavefront_step_seconds([first, upper], gpu)
    projection = report.model.gemm_seconds(16 * 1024, 4 * 768, 768, 2, gpu)
    by_hand = (projection + report.model.LAUNCH_S + 1025 * step) * 1e3
    row = report.stack_row("lstm", 768, 16, "fp16", 1024, "h100")
    single = report.model_layer_ms("lstm", 768, 16, "fp16", 1024, "h100")[0]
    assert (row["wavefront"], row["programs_per_layer"], row["barrier_steps"]) == (True, "48+48", 1025)
    assert row["model_forward_ms"] == round(by_hand, 3)
    assert row["model_layer_by_layer_forward_ms"] == round(2 * single, 3)
    assert row["model_vs_layer_by_layer"] == round(by_hand / (2 * single), 3)
    # torch.nn runs a 2-layer stack with cuDNN's STANDARD algorithm (PERSIST_STATIC needs one layer).
    assert row["cudnn_algorithm"] == "STANDARD"


def test_wavefront_that_does_not_fit_falls_back_to_layer_by_layer():
    """fp32 H768: the upper layer's stacked slices do not fit beside layer 0's on an H100; the MODEL then
    charges L x T steps, the layers one after the other."""
    row = report.stack_row("lstm", 768, 16, "fp32", 1024, "h100")
    assert not row["wavefront"] and "do not fit" in row["reason"] and row["barrier_steps"] == 2 * 1024
    single = report.model_layer_ms("lstm", 768, 16, "fp32", 1024, "h100")[0]
    assert row["model_forward_ms"] == row["model_layer_by_layer_forward_ms"] == round(2 * single, 3)
    assert row["model_vs_layer_by_layer"] == 1.0


def test_wavefront_kernels_report_compiles_the_passes_with_input_weights_on_chip(tmp_path):
    """`python -m bench report --wavefront-kernels`: a row per pass whose plan holds W_in on chip (here the
    Elman H64 B16 forward; its backward streams its 8 KiB W_in), compiled as launched, one launch."""
    argv = ["--wavefront-kernels", "--cell", "rnn_tanh", "--dtype", "fp16", "--hidden", "64", "--batch", "16",
            "--gpu", "h100", "--seq-len", "64", "--out", str(tmp_path)]  # fmt: skip
    assert report.main_report(argv) == 0
    with open(tmp_path / "wavefront-kernels.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["cell"], row["scan_pass"]) for row in rows] == [("rnn_tanh", "forward")], rows
    assert rows[0]["spill_bytes"] == "0" and rows[0]["fits"] == "True" and int(rows[0]["registers"]) > 0
    assert rows[0]["loop_local_accesses"] == "0"


def test_bidirectional_stack_has_no_wavefront():
    """Each direction of layer 1 starts from an output layer 0 writes at its last step: no overlap, L x T
    steps; the upper layer projects both directions' outputs (input 2H)."""
    from rnnfast.kernels.configs import NO_BIDIRECTIONAL_WAVEFRONT

    row = report.stack_row("lstm", 768, 16, "fp16", 1024, "h100", directions=2)
    assert row["reason"] == NO_BIDIRECTIONAL_WAVEFRONT and row["barrier_steps"] == 2 * 1024
    q = report.plan_quantities("lstm", 768, 16, torch.float16, 1024, "h100", 2)
    layers = [
        report.model.layer_ms(q["forward"], q["backward"], 4, 1024, 16, 768, 2, "h100", 2, input_size=size)[0]
        for size in (768, 2 * 768)
    ]
    assert row["model_forward_ms"] == row["model_layer_by_layer_forward_ms"] == round(sum(layers), 3)
    assert layers[1] > layers[0]


def test_step_terms_add_up_to_the_step():
    """step-terms.csv (issue 26 item 3): each pass's terms add up to its cycles, and its step to the
    model's; the LSTM fp16 B16 H768 backward (in K groups: configs.GROUPED_MIN_MMA_CHAIN) pays more than
    its forward in its dot (a chain of 24 MMAs to 12) and in the K group's two L2 round trips, the same in
    the rest."""
    rows = report.plan_rows(["lstm"], ["fp16"], [768], [16], ["h100"], 1024)
    forward, backward = report.step_term_rows(rows)
    q = report.plan_quantities("lstm", 768, 16, torch.float16, 1024, "h100")
    gpu = report.model.GPUS["h100"]
    for row, work in ((forward, q["forward"]), (backward, q["backward"])):
        assert row["cycles"] == round(sum(row[term] for term in report.model.STEP_TERMS))
        assert row["step_us"] == round(report.model.step_seconds(work, gpu) * 1e6, 3)
    more = {term for term in report.model.STEP_TERMS if backward[term] > forward[term]}
    assert more == {"dot", "l2_round_trips"}
    assert all(backward[term] == forward[term] for term in report.model.STEP_TERMS if term not in more)


def test_overlapped_wavefront_hides_the_upper_input_dot_in_the_barrier_wait():
    """Upper layers two steps behind (layer l at step t - 2l, issue 26 item 1): an upper layer's y_t load
    and W_ih dot run during the barrier wait; only their cycles past BARRIER_S reach the step, and the
    forward takes T + 2(L - 1) steps. Issue 26's 2-layer LSTM B16 T1024 H768 fp16 then models at most
    0.6x of two single layers (one step behind: 0.695x)."""
    model = report.model
    gpu = model.GPUS["h100"]

    def work(programs: int, tiles: int) -> model.PassWork:
        return model.PassWork(programs, 1, 1, tiles, 0, 0, 0, 0, 0, 0, 0, True)

    barrier = model.BARRIER_S * gpu.clock_hz
    short = dataclasses.replace(work(48, 0), chunks_per_step=1)  # 150 cycles: hidden in the wait
    long = dataclasses.replace(work(48, 0), chunks_per_step=int(barrier // model.CHUNK_CYCLES) + 10)
    first, upper = work(48, 1), work(48, 1)
    base = model.TILE_CYCLES / gpu.clock_hz + model.BARRIER_S
    assert model.overlapped_wavefront_step_seconds([first, upper], [None, short], gpu) == pytest.approx(base)
    past = (long.chunks_per_step * model.CHUNK_CYCLES - barrier) / gpu.clock_hz
    assert model.overlapped_wavefront_step_seconds([first, upper], [None, long], gpu) == pytest.approx(base + past)
    row = report.stack_row("lstm", 768, 16, "fp16", 1024, "h100")
    assert row["model_vs_layer_by_layer"] > 0.6 >= row["model_overlapped_vs_layer_by_layer"]
    from rnnfast.kernels.configs import plan_wavefront, planning_for

    with planning_for("h100"):
        upper = plan_wavefront("lstm", 768, 16, torch.float16, 2).upper
    critical, waiting = report.overlapped_upper_work(upper, 768, 768, 2)
    # The same slice split along K: H of W_hh after the barrier, the input's W_ih during it.
    assert critical.programs == waiting.programs == upper.programs
    assert critical.shared_bytes_per_step + waiting.shared_bytes_per_step == upper.weight_bytes
    assert (waiting.tiles_per_step, waiting.barriers_per_step, critical.tiles_per_step) == (0, 0, 1)


def test_built_wavefront_model():
    """The wavefront rnnfast runs (rnnfast/wavefront.py): one pass plan for both layers, T + 2(L - 1) steps
    per pass, the upper layer's input dot during the wait. Issue 26's shape (fp16 B16 H768, H100) holds
    W_ih on chip in both passes (the backward's slices, 196,608 B, in 16-row tiles) and models under 0.6x of
    layer by layer forward, 0.7x forward+backward (the GRU's backward too); at B64 it would stream W_ih
    and lose, so it runs layer by layer; small layers gain in both passes."""
    target = report.stack_row("lstm", 768, 16, "fp16", 1024, "h100")
    assert target["built_wavefront"] and target["built_w_in_on_chip"] and target["built_backward_w_in_on_chip"]
    assert target["model_built_vs_layer_by_layer"] <= 0.6
    assert target["model_built_training_vs_layer_by_layer"] < 0.7
    # The backward gains too: more than the forward's gain alone.
    gain = target["model_layer_by_layer_forward_ms"] - target["model_built_forward_ms"]
    training = target["model_layer_by_layer_forward_backward_ms"] - gain
    assert target["model_built_forward_backward_ms"] < training - 1.0
    # The GRU's: the layer above's W_ih slice fits on chip beside W_hh in the backward too (147,456 B).
    gru = report.stack_row("gru", 768, 16, "fp16", 1024, "h100")
    assert gru["built_backward_wavefront"] and gru["built_w_in_on_chip"] and gru["built_backward_w_in_on_chip"]
    assert gru["model_built_training_vs_layer_by_layer"] < 0.65
    wide = report.stack_row("lstm", 768, 64, "fp16", 1024, "h100")
    assert not wide["built_wavefront"] and "too large to stream" in wide["built_reason"]
    assert not wide["built_w_in_on_chip"] and wide["model_built_vs_layer_by_layer"] > 1.0
    small = report.stack_row("lstm", 128, 16, "fp16", 1024, "h100")
    assert small["built_wavefront"] and small["built_backward_wavefront"]
    assert small["model_built_vs_layer_by_layer"] < 0.6 and small["model_built_training_vs_layer_by_layer"] < 0.8
    from rnnfast.kernels.configs import plan_wavefront_lanes, planning_for

    with planning_for("h100"):
        plan = plan_wavefront_lanes("lstm", 128, 16, torch.float16, None, 2)
    gpu = report.model.GPUS["h100"]
    lane = dataclasses.replace(plan.forward, directions=1, weight_bytes=128 * plan.forward.dot_columns * 2)
    assert small["built_programs_per_layer"] == lane.programs
    critical = report.pass_work(lane, 128, 1, True, 2)
    step = report.model.overlapped_wavefront_step_seconds([critical, critical], [None, None], gpu)
    # The input dot adds only what exceeds the barrier's wait: at H128 nothing, so the forward is layer 0's
    # projection, one launch and T + 2 steps of a layer's step.
    projection = report.model.gemm_seconds(16 * 1024, 4 * 128, 128, 2, gpu)
    assert small["model_built_forward_ms"] == round((projection + report.model.LAUNCH_S + 1026 * step) * 1e3, 3)
