"""RNNFAST_PLAN_TARGET, the testing switch of kernels/configs.py: under TRITON_INTERPRET=1 the planner plans
as it would on that GPU (its SM count, shared memory and register limits), grid barrier included, so that
tests can run a GPU's plan on CPU tensors (under tests/threaded.py, whose programs run at the same time).
Without the interpreter it is ignored: a real GPU is planned from its own properties."""

import pytest
import torch

from rnnfast.kernels import configs


@pytest.fixture
def target(monkeypatch):
    def set_target(name: str | None, interpret: bool = True):
        monkeypatch.setenv("TRITON_INTERPRET", "1" if interpret else "0")
        if name is None:
            monkeypatch.delenv(configs.PLAN_TARGET_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(configs.PLAN_TARGET_VARIABLE, name)

    monkeypatch.delenv(configs.NO_GRID_SYNC_VARIABLE, raising=False)
    return set_target


def test_plan_target_plans_as_on_that_gpu(target):
    # H480 LSTM forward: 120 programs of 4 units fit an H100's 132 SMs in one wave, not an A100's 108.
    plans = {}
    for gpu in ("h100", "a100"):
        target(gpu)
        assert configs.target_gpu() == configs.GPUS[gpu]
        assert configs.target_gpu(torch.device("cpu")) == configs.GPUS[gpu]
        plans[gpu] = configs.plan_layer("lstm", 480, 16, torch.float16)
        assert plans[gpu].gpu == configs.GPUS[gpu]
        assert plans[gpu].programs <= configs.GPUS[gpu].sm_count
        assert plans[gpu].grid_sync  # the GPU's plan: one launch, a grid barrier between steps
    assert (plans["h100"].forward.hidden_tiles, plans["a100"].forward.hidden_tiles) == (120, 60)


def test_plan_target_unset_plans_the_fallback(target):
    target(None)
    plan = configs.plan_layer("lstm", 480, 16, torch.float16)
    assert plan.gpu == configs.GPUS["h100"] and not plan.grid_sync and plan.launches_forward(10) == 10


def test_plan_target_only_under_the_interpreter(target):
    target("a100", interpret=False)
    assert configs.plan_target() is None
    assert configs.target_gpu() == configs.GPUS["h100"]


def test_plan_target_unknown_gpu_is_an_error(target):
    target("v100")
    with pytest.raises(ValueError, match=r"RNNFAST_PLAN_TARGET must be one of \['a100', 'h100'\], got 'v100'"):
        configs.plan_layer("lstm", 64, 4, torch.float32)
