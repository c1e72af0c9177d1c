"""Every kernel configuration the planner can choose compiles for sm_80 and sm_90 within the hardware's
limits (no GPU needed: Triton compiles for a GPUTarget offline, cuobjdump reads the cubin)."""

import pytest
import torch
from rnnfast.kernels.hardware import planned_kernel_report

HIDDEN_SIZES = [1, 5, 16, 17, 32, 33, 64, 100, 128, 255, 256, 257, 512, 768, 1000, 1024]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CELLS = ["lstm", "gru", "elman"]
# Bytes per thread spilled to local memory that the planner's choices may reach.
SPILL_BUDGET = 0


@pytest.fixture(scope="module")
def report():
    # Flags (REVERSE, TRAINING, RELU) change indexing and stores, not tiles: the heaviest stands for all
    # here, and `python -m bench report` compiles every combination.
    return planned_kernel_report(CELLS, HIDDEN_SIZES, DTYPES, [80, 90], every_flag=False)


@pytest.mark.parametrize("cell", CELLS)
def test_planned_kernels_compile_within_limits(report, cell):
    rows = [row for row in report if row["cell"] == cell]
    assert {(row["dtype"], row["arch"], row["scan_pass"]) for row in rows} == {
        (dtype, arch, scan_pass)
        for dtype in ("fp32", "fp16", "bf16")
        for arch in (80, 90)
        for scan_pass in ("forward", "backward")
    }
    covered = {(row["dtype"], hidden) for row in rows for hidden in row["hidden_sizes"]}
    assert covered == {(dtype, hidden) for dtype in ("fp32", "fp16", "bf16") for hidden in HIDDEN_SIZES}
    too_big = [row for row in rows if not row["fits"] or row["spill_bytes"] > SPILL_BUDGET]
    assert not too_big, "\n".join(map(str, too_big))
