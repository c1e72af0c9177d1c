"""The kernels' exp, sigmoid and tanh against float64, over the whole float32 range: tiny arguments
(where small activations live: no bias, projections), ordinary ones, saturation and overflow."""

import pytest
import torch
import triton
import triton.language as tl

import rnnfast
from rnnfast.kernels import activations
from tests.oracle import assert_matches

# CUDA documents its own float32 expf and tanhf as within 2 ulp; torch.nn's GPU activations use them.
MAX_ULP = 2.0


@triton.jit
def _apply_kernel(x_ptr, out_ptr, N, FUNCTION: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask)
    if FUNCTION == "exp":
        y = activations.exp(x)
    elif FUNCTION == "sigmoid":
        y = activations.sigmoid(x)
    else:
        y = activations.tanh(x)
    tl.store(out_ptr + offs, y, mask=mask)


def _arguments() -> torch.Tensor:
    """+-x for x from 1e-38 to 110 on a log scale, and 0 to 110 on a linear one."""
    magnitudes = torch.cat([torch.logspace(-38, 2.05, 6000, dtype=torch.float64), torch.linspace(0, 110, 6000)])
    return torch.cat([magnitudes, -magnitudes]).float()


def _ulp_error(actual: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|actual - exact| in units of the float32 spacing at the exact value (the smallest subnormal at 0)."""
    rounded = exact.float().abs()
    spacing = torch.nextafter(rounded, torch.tensor(float("inf"))) - rounded
    spacing = torch.where(rounded == 0, torch.tensor(torch.finfo(torch.float32).smallest_normal * 2**-23), spacing)
    return (actual.double() - exact).abs() / spacing.double()


def apply(function: str, x: torch.Tensor) -> torch.Tensor:
    """activations.`function` of x by a kernel launched as the scans launch theirs (no floating-point
    contraction but the functions' own tl.fma: kernels/launch.py), on x's device."""
    out = torch.empty_like(x)
    grid = (triton.cdiv(x.numel(), 1024),)
    _apply_kernel[grid](x, out, x.numel(), FUNCTION=function, BLOCK=1024, enable_fp_fusion=False)
    return out


def assert_within_2_ulp_everywhere(function: str, device: torch.device) -> None:
    x = _arguments()
    out = apply(function, x.to(device)).cpu()
    exact = getattr(torch, function)(x.double())
    representable = exact.abs() <= torch.finfo(torch.float32).max
    error = _ulp_error(out[representable], exact[representable])
    worst = error.argmax()
    assert error.max() <= MAX_ULP, f"{function}({x[representable][worst]:.6g}) is {error.max():.2f} ulp off"
    assert torch.equal(out[~representable], exact[~representable].float())  # exp overflows to inf
    assert torch.equal(out[x == 0], exact[x == 0].float())


@pytest.mark.parametrize("function", ["exp", "sigmoid", "tanh"])
def test_activation_within_2_ulp_everywhere(function):
    assert_within_2_ulp_everywhere(function, torch.device("cpu"))


def test_tanh_keeps_relative_precision_near_zero():
    """2 * sigmoid(2x) - 1 would return 0 or a multiple of 6e-8 here: the error a float64 reference saw."""
    x = torch.tensor([1e-30, -3e-12, 1e-7, 2.5e-4, -0.01], dtype=torch.float32)
    out = apply("tanh", x)
    exact = torch.tanh(x.double())
    assert ((out.double() - exact).abs() / exact.abs()).max() < 1.2e-7


@pytest.mark.parametrize(
    "module_name, options",
    [("LSTM", {"proj_size": 3}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})],
    ids=["lstm-proj", "gru", "rnn_tanh", "rnn_relu"],
)
def test_tiny_activations_match_float64_relatively(module_name, options):
    """No bias, inputs of 1e-4: every value is tiny, so the kernels' outputs and gradients are compared
    with float64 torch.nn relative to their own magnitude."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, module_name)(6, 5, bias=False, **options).double()
    module = getattr(rnnfast, module_name)(6, 5, bias=False, backend="triton", **options)
    module.load_state_dict({name: value.float() for name, value in reference.state_dict().items()})
    x = torch.randn(7, 3, 6, dtype=torch.float64) * 1e-4
    ref_x, x = x.clone().requires_grad_(), x.float().requires_grad_()
    ref_out, _ = reference(ref_x)
    out, _ = module(x)
    grad_output = torch.randn_like(ref_out)
    ref_grads = torch.autograd.grad(ref_out, [ref_x, *reference.parameters()], grad_output)
    grads = torch.autograd.grad(out, [x, *module.parameters()], grad_output.float())
    assert_matches(out, ref_out, torch.float32, "output", relative=True)
    names = ["input"] + [name for name, _ in module.named_parameters()]
    for name, mine, theirs in zip(names, grads, ref_grads):
        assert_matches(mine, theirs, torch.float32, f"grad of {name}", relative=True)
