"""Thread-block clusters on sm_90 with Triton, compiled offline (no GPU): what Triton can express, with
the PTX, cubin and resource evidence that docs/clusters.md cites (issue 26, item 2).

Each case is a small kernel compiled by `triton.compile` for GPUTarget("cuda", 90, 32) with a given
`num_ctas`, in its own process: Triton 3.6 aborts (a C++ assertion, not an exception) on some cases that
3.9 compiles, and a subprocess turns that into a row that says so. Nothing here runs on a GPU.

    python -m bench.clusters                       # the installed Triton, every case
    PYTHONPATH=.ci/triton-oldest python -m bench.clusters    # Triton 3.6 (the oldest rnnfast supports)
    python -m bench.clusters --case lstm --ctas 16 --hidden 512 --warps 8    # one case, one JSON line

Cases:
  launch     a plain tl kernel (one store) compiled with num_ctas=N: what the PTX declares
             (.explicitcluster, .reqnctapercluster N) and how program_id is computed.
  barrier    a tl kernel that reads %cluster_ctarank and runs `barrier.cluster.arrive.release.aligned;
             barrier.cluster.wait.acquire.aligned;` as inline PTX: ptxas accepts it with and without a
             cluster launch; the SASS it becomes.
  lstm       an fp16 LSTM forward recurrence written as ONE Triton program that holds all of W_hh
             ([H, H] per gate) and loops over the steps; with num_ctas=N the compiler spreads the program
             over the N CTAs of a cluster (W split by output column) and exchanges h between them through
             distributed shared memory (mapa / ld.shared::cluster) and cluster barriers.
  allgather  a Gluon kernel (Triton >= 3.9: gluon...hopper.cluster, hopper.async_store): every step each
             CTA st.async's its columns of h into every CTA's shared memory, completion counted by the
             receiver's mbarrier (expect_tx), one cluster barrier per step.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ARCH = 90
_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sm_90 limits: max dynamic shared memory per block (rnnfast.kernels.configs GPUS["h100"].shared_per_block),
# portable and non-portable cluster sizes (CUDA programming guide, thread block clusters).
SHARED_PER_BLOCK = 232448
PORTABLE_CLUSTER = 8
MAX_CLUSTER = 16

BARRIER_ASM = "barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;"


@triton.jit
def launch_probe(out, BLOCK: tl.constexpr):
    """One store of BLOCK int32 per program: shows how a num_ctas launch splits a program."""
    offs = tl.arange(0, BLOCK)
    tl.store(out + tl.program_id(0) * BLOCK + offs, offs)


@triton.jit
def barrier_probe(out, BLOCK: tl.constexpr, ASM: tl.constexpr):
    """A store, the cluster barrier as inline PTX (a scalar asm: every thread runs it once, unpredicated),
    then another store; the CTA's rank in its cluster is stored too."""
    offs = tl.arange(0, BLOCK)
    rank = tl.inline_asm_elementwise("mov.u32 $0, %cluster_ctarank;", "=r", [], dtype=tl.int32, is_pure=True, pack=1)
    tl.store(out + offs, offs + rank)
    tl.inline_asm_elementwise(ASM + "\n\tmov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
    tl.store(out + BLOCK + offs, offs)


@triton.jit
def lstm_cluster_scan(gx, w_hh, h0, c0, hs, T, B: tl.constexpr, H: tl.constexpr):
    """fp16 LSTM forward over T steps in one program. gx: [T, B, 4H] fp32 (x @ W_ih^T + biases, gate order
    i, f, g, o as torch), w_hh: [4H, H] fp16 (torch's weight_hh_l0), h0: [B, H] fp16, c0: [B, H] fp32,
    hs: [T, B, H] fp16. A prototype for the compiler's cluster lowering: not numerically checked on a GPU."""
    k = tl.arange(0, H)[:, None]
    j = tl.arange(0, H)[None, :]
    w_i = tl.load(w_hh + (0 * H + j) * H + k)  # [K, N]: W_hh[gate * H + n, k]
    w_f = tl.load(w_hh + (1 * H + j) * H + k)
    w_g = tl.load(w_hh + (2 * H + j) * H + k)
    w_o = tl.load(w_hh + (3 * H + j) * H + k)
    bh = tl.arange(0, B)[:, None] * H + j
    h = tl.load(h0 + bh)
    c = tl.load(c0 + bh)
    for t in range(T):
        g = gx + t * B * 4 * H + tl.arange(0, B)[:, None] * 4 * H + j
        i = tl.sigmoid(tl.dot(h, w_i) + tl.load(g))
        f = tl.sigmoid(tl.dot(h, w_f) + tl.load(g + H))
        z = 2 * tl.sigmoid(2 * (tl.dot(h, w_g) + tl.load(g + 2 * H))) - 1
        o = tl.sigmoid(tl.dot(h, w_o) + tl.load(g + 3 * H))
        c = f * c + i * z
        h = (o * (2 * tl.sigmoid(2 * c) - 1)).to(tl.float16)
        tl.store(hs + t * B * H + bh, h)


def _gluon_allgather():
    """The Gluon all-gather kernel, or None where this Triton's Gluon lacks hopper.cluster/async_store."""
    try:
        from triton.experimental import gluon
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon.language.nvidia import hopper
        from triton.experimental.gluon.language.nvidia.hopper import mbarrier
    except ImportError:
        return None
    if not (hasattr(hopper, "cluster") and hasattr(hopper, "async_store") and hasattr(mbarrier, "allocate_mbarrier")):
        return None

    @gluon.jit
    def h_allgather(h_in, out, T, B: gl.constexpr, H: gl.constexpr, N: gl.constexpr,
                    BY_COLS: gl.constexpr, BY_SLOT: gl.constexpr, REPL: gl.constexpr):  # fmt: skip
        # CTA c of the N-CTA cluster owns columns [c H/N, (c+1) H/N) of h [B, H]. Each step every CTA
        # st.async's its columns into slot r of a [N, B, H] buffer whose slot r is CTA r's shared memory (an
        # all-gather over DSMEM; the receiver's mbarrier counts the bytes in), then reads the whole h.
        spread: gl.constexpr = gl.BlockedLayout([1, 1, 2], [1, 2, 16], [1, 4, 1], [2, 1, 0], cga_layout=BY_COLS)
        owned: gl.constexpr = gl.SliceLayout(0, spread)
        whole: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [4, 1], [1, 0], cga_layout=REPL)
        rows = gl.arange(0, B, layout=gl.SliceLayout(1, owned))[:, None]
        cols = gl.arange(0, H, layout=gl.SliceLayout(0, owned))[None, :]
        h = gl.load(h_in + rows * H + cols)
        slots = gl.allocate_shared_memory(
            gl.float16, [N, B, H], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0], cga_layout=BY_SLOT)
        )
        mine = slots.reinterpret(gl.float16, [B, H], gl.SwizzledSharedLayout(1, 1, 1, [1, 0], cga_layout=REPL))
        bar = mbarrier.allocate_mbarrier()
        mbarrier.init(bar, count=1)
        hopper.cluster.barrier()  # every CTA's mbarrier is initialised before any remote arrival
        for t in range(T):
            mbarrier.expect(bar, slots.nbytes_per_cta)
            hopper.async_store(slots, gl.expand_dims(h, 0).broadcast_to([N, B, H]), bar)
            mbarrier.wait(bar, t % 2, deps=[slots])
            full = mine.load(whole)
            hopper.cluster.barrier()  # no CTA overwrites a copy another still reads (double buffering would drop it)
            h = (gl.convert_layout(full, owned) + 1.0).to(gl.float16)
        gl.store(out + rows * H + cols, h)
        mbarrier.invalidate(bar)

    return h_allgather


def _loop_body(ptx: str) -> str:
    """The PTX of the innermost loop LLVM marks (`// =>This Inner Loop Header`) up to its back branch."""
    header = r"^(\$L__BB\d+_\d+):\s*// =>This Inner Loop Header.*?$"
    match = re.search(header + r"(.*?)^\s*@%p\d+ bra\s+\1;", ptx, re.M | re.S)
    return match.group(2) if match else ""


PTX_COUNTS = {
    "barrier_cluster": r"barrier\.cluster\.arrive",
    "mapa": r"\bmapa\.",
    "ld_shared_cluster": r"ld\.shared::cluster",
    "st_async": r"\bst\.async",
    "mbarrier_expect_tx": r"mbarrier\.[a-z.]*expect_tx",
    "mma_sync": r"\bmma\.sync",
    "bar_sync": r"\bbar\.sync",
}


def _report(compiled, num_ctas: int) -> dict:
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        cuobjdump = os.path.join(_BIN, "cuobjdump")
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True)
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    resources = dict(re.findall(r"\b(REG|STACK):(\d+)", usage.stdout))
    loop = _loop_body(ptx)
    body = ptx[ptx.index(".entry") :]
    return dict(
        ok=True,
        num_ctas=compiled.metadata.num_ctas,
        cluster_directives=re.findall(r"^\s*(\.explicitcluster|\.reqnctapercluster \d+)", ptx, re.M),
        program_id=sorted(set(re.findall(r"%(clusterid\.x|ctaid\.x)", body))),
        dynamic_shared=compiled.metadata.shared,
        fits_shared=compiled.metadata.shared <= SHARED_PER_BLOCK,
        registers=int(resources.get("REG", -1)),
        stack=int(resources.get("STACK", -1)),
        cubin_bytes=len(compiled.asm["cubin"]),
        ptx=dict((name, len(re.findall(rx, body))) for name, rx in PTX_COUNTS.items()),
        loop_ptx=dict((name, len(re.findall(rx, loop))) for name, rx in PTX_COUNTS.items()) if loop else None,
        sass={
            op: len(re.findall(rf"\b{op}\b", sass))
            for op in ("UCGABAR_ARV", "UCGABAR_WAIT", "MEMBAR.ALL.GPU", "CCTL.IVALL")
        },
        barrier_asm=sorted(set(re.findall(r"barrier\.cluster\.(?:arrive|wait)[a-z.]*;", body))),
    )


def compile_case(case: str, num_ctas: int, hidden: int = 256, warps: int = 4, asm: str = BARRIER_ASM) -> dict:
    """Compiles one case for sm_90 in this process; raises where Triton refuses it."""
    target = GPUTarget("cuda", ARCH, 32)
    options = dict(num_warps=warps, num_ctas=num_ctas)
    if case == "launch":
        src = ASTSource(launch_probe, signature={"out": "*i32", "BLOCK": "constexpr"}, constexprs={"BLOCK": 1024})
    elif case == "barrier":
        sig = {"out": "*i32", "BLOCK": "constexpr", "ASM": "constexpr"}
        src = ASTSource(barrier_probe, signature=sig, constexprs={"BLOCK": 128, "ASM": asm})
    elif case == "lstm":
        sig = {"gx": "*fp32", "w_hh": "*fp16", "h0": "*fp16", "c0": "*fp32", "hs": "*fp16", "T": "i32"}
        sig |= {"B": "constexpr", "H": "constexpr"}
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(5)}  # fresh buffers, as a launch would see them
        src = ASTSource(lstm_cluster_scan, signature=sig, constexprs={"B": 16, "H": hidden}, attrs=attrs)
    elif case == "allgather":
        kernel = _gluon_allgather()
        if kernel is None:
            raise NotImplementedError(f"Triton {triton.__version__}'s Gluon has no hopper.cluster / async_store")
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon._runtime import GluonASTSource

        bits = num_ctas.bit_length() - 1
        layouts = dict(
            BY_COLS=gl.constexpr([[0, 0, 1 << b] for b in range(bits)]),
            BY_SLOT=gl.constexpr([[1 << b, 0, 0] for b in range(bits)]),
            REPL=gl.constexpr([[0, 0] for _ in range(bits)]),
        )
        sig = {"h_in": "*fp16", "out": "*fp16", "T": "i32"} | {k: "constexpr" for k in ("B", "H", "N", *layouts)}
        src = GluonASTSource(kernel, signature=sig, constexprs={"B": 16, "H": hidden, "N": num_ctas, **layouts})
    else:
        raise ValueError(case)
    return _report(triton.compile(src, target=target, options=options), num_ctas)


def run_case(case: str, num_ctas: int, hidden: int = 256, warps: int = 4, pythonpath: str | None = None) -> dict:
    """compile_case in a fresh process (TRITON_INTERPRET=0; PYTHONPATH=pythonpath picks another Triton):
    a row with ok=False and the error's last lines where the compiler refused or aborted."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "bench.clusters", "--case", case, "--ctas", str(num_ctas)]
    command += ["--hidden", str(hidden), "--warps", str(warps)]
    run = subprocess.run(command, cwd=_REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [line for line in run.stderr.splitlines() if re.search(r"error|Assertion|Error:", line)]
    return dict(case=case, num_ctas=num_ctas, hidden=hidden, warps=warps, ok=False, returncode=run.returncode,
                error=" | ".join(errors[-3:])[-600:])  # fmt: skip


CASES = [
    ("launch", 1, 256, 4), ("launch", 2, 256, 4), ("launch", 16, 256, 4), ("launch", 32, 256, 4),
    ("barrier", 1, 256, 4), ("barrier", 16, 256, 4),
    ("lstm", 1, 256, 4), ("lstm", 4, 256, 4), ("lstm", 16, 256, 4), ("lstm", 8, 512, 8), ("lstm", 16, 512, 8),
    ("allgather", 16, 512, 4),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["launch", "barrier", "lstm", "allgather"])
    parser.add_argument("--ctas", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--warps", type=int, default=4)
    args = parser.parse_args()
    if args.case:
        row = compile_case(args.case, args.ctas, args.hidden, args.warps)
        print(json.dumps(dict(case=args.case, hidden=args.hidden, warps=args.warps, version=triton.__version__) | row))
        return
    for case, ctas, hidden, warps in CASES:
        row = run_case(case, ctas, hidden, warps, os.environ.get("PYTHONPATH"))
        print(json.dumps(dict(version=triton.__version__) | row), flush=True)


if __name__ == "__main__":
    main()
