"""Run every program of an interpreted Triton launch in its own thread, so that kernels whose programs
wait for each other (a grid-wide barrier: release atomic_add, acquire atomic_poll) run on CPU.

    with threaded_programs(random_yields=0.3, seed=1):
        kernel[grid](...)

Triton's stock interpreter runs the programs of a launch one after another, so the first program that
waits for another waits forever. Inside `threaded_programs`:

- `tl.program_id` is per thread: the interpreter's builder keeps the program id in one attribute,
  `grid_idx`, which becomes a thread-local property.
- Memory is shared: the interpreter maps every tensor argument to host memory once per launch, and loads,
  stores and atomics go through raw addresses, so every program sees the same buffers. Those calls run in
  C++ under the GIL, so each one is indivisible: memory is sequentially consistent here. This tests the
  logic of a barrier (counts, expected values, slot indexing, what is read before it is written, the
  timeout path), not the GPU's weak memory model (missing fences, L1-cached loads): only hardware shows
  those.
- `tl.atomic_poll` yields the GIL while it spins. Its timeout counts from the last write of any program
  (interpreted programs are slow: a barrier should time out when the others stop making progress, not
  because they are interpreted). A launch in which every running program polls without a timeout for a
  value no program can still write stops with a `ThreadedDeadlockError` (a GPU would hang there).
- With `random_yields` > 0, each load, store and atomic first sleeps a random moment with that
  probability, so interleavings vary and a missing barrier shows up as wrong numbers rather than passing
  by luck of scheduling.
- `tl.debug_barrier` stays a no-op: one thread stands for a whole CTA.

Only the program loop of Triton's `GridExecutor.__call__` is replaced (argument copies, language patches
and error wrapping stay Triton's own): the kernel function the executor calls once per program is swapped,
for one launch, for a runner that starts every program on its first call and ignores the rest. Entering
the context checks the interpreter internals this relies on and raises `RuntimeError` naming the one that
differs; a launch whose executor does not call the kernel once per program raises too.
"""

import contextlib
import functools
import inspect
import random
import threading
import time

import numpy as np
import triton.language as tl

__all__ = ["ThreadedDeadlockError", "threaded_programs"]


class ThreadedDeadlockError(RuntimeError):
    """Every running program waits in tl.atomic_poll, without a timeout, for a value nobody will write."""


# The interpreter internals used here, with the parameters each must have (names, in order).
_BUILDER_METHODS = {
    "set_grid_idx": ("self", "x", "y", "z"),
    "create_load": ("self", "ptr", "cache_policy", "is_volatile"),
    "create_get_program_id": ("self", "axis"),
    "create_masked_load": ("self", "ptrs", "mask", "other", "cache_policy", "is_volatile"),
    "create_masked_store": ("self", "ptrs", "value", "mask", "cache_policy"),
    "create_atomic_rmw": ("self", "rmwOp", "ptr", "val", "mask", "sem", "scope"),
    "create_atomic_cas": ("self", "ptr", "cmp", "val", "sem", "scope"),
    "create_atomic_poll": ("self", "ptr", "expected", "timeout_ns", "sem", "scope"),
}
_WRITES = ("create_masked_store", "create_atomic_rmw", "create_atomic_cas")
_MEMORY_OPS = ("create_masked_load",) + _WRITES


def _interpreter():
    """Triton's interpreter module, after checking everything threaded_programs relies on."""
    import triton

    if not triton.knobs.runtime.interpret:
        raise RuntimeError(
            "threaded_programs needs Triton's interpreter: set TRITON_INTERPRET=1 before importing triton"
        )
    from triton.runtime import interpreter

    for name in ("interpreter_builder", "GridExecutor", "TensorHandle"):
        if not hasattr(interpreter, name):
            raise RuntimeError(
                f"threaded_programs: triton.runtime.interpreter has no {name} (Triton {triton.__version__})"
            )
    builder_class = type(interpreter.interpreter_builder)
    if "grid_idx" in builder_class.__dict__:
        raise RuntimeError(
            f"threaded_programs: {builder_class.__name__}.grid_idx is a class attribute (Triton "
            f"{triton.__version__}), expected the per-launch instance attribute it replaces (or nested use)"
        )
    for name, parameters in _BUILDER_METHODS.items():
        method = getattr(builder_class, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else None
        if found != parameters:
            raise RuntimeError(
                f"threaded_programs: Triton {triton.__version__}'s interpreter {builder_class.__name__}.{name} "
                f"has parameters {found}, expected {parameters}"
            )
    return interpreter


class _Launch:
    """What the programs of one launch share: who is running, who is polling, how often memory changed."""

    def __init__(self, grid):
        self.grid = grid
        self.lock = threading.Lock()
        self.running = 0
        self.writes = 0
        self.polling = {}  # thread ident -> write count it last polled at, for polls without a timeout

    def deadlocked(self) -> bool:
        """Every running program polls without a timeout and has polled since the last write."""
        return len(self.polling) == self.running and all(seen == self.writes for seen in self.polling.values())


_state = threading.local()  # .grid_idx: this thread's program; .launch: its _Launch


@contextlib.contextmanager
def threaded_programs(random_yields: float = 0.0, seed: int = 0):
    """Inside this context, an interpreted launch `kernel[grid](...)` runs every program in its own thread
    and returns when all have finished. A program's error is raised as a RuntimeError naming the program
    (the lowest failing id), a deadlock as ThreadedDeadlockError.

    random_yields: probability that a load, store or atomic first sleeps a random moment (0 to 1 ms).
    seed: seeds those yields (the threads' interleaving still varies from run to run).
    """
    if not 0.0 <= random_yields <= 1.0:
        raise ValueError(f"random_yields must be a probability in [0, 1], got {random_yields}")
    interpreter = _interpreter()
    builder_class = type(interpreter.interpreter_builder)
    executor_class = interpreter.GridExecutor
    originals = {name: builder_class.__dict__[name] for name in _MEMORY_OPS + ("create_atomic_poll",)}
    original_call = executor_class.__call__
    rng = random.Random(seed)
    rng_lock = threading.Lock()

    def maybe_yield():
        if random_yields == 0.0:
            return
        with rng_lock:
            draw, pause = rng.random(), rng.random() * 1e-3
        if draw < random_yields:
            time.sleep(pause)

    def memory_op(name):
        original = originals[name]
        counts_as_write = name in _WRITES

        @functools.wraps(original)
        def op(self, *args, **kwargs):
            maybe_yield()
            result = original(self, *args, **kwargs)
            if counts_as_write:
                launch = _state.launch
                with launch.lock:
                    launch.writes += 1
            return result

        return op

    def atomic_poll(self, ptr, expected, timeout_ns, sem, scope):
        # The stock poll (element by element, re-read until equal or out of time), yielding between reads.
        # The time budget restarts whenever some program writes memory: interpreted programs are slow,
        # and a barrier should time out when the others stopped making progress, not because they are
        # interpreted. Without a timeout, a launch where nothing can change the value any more is reported.
        launch = _state.launch
        # Without a timeout Triton passes an empty IR value (which the stock interpreter then fails on).
        limit = int(np.asarray(timeout_ns.data).item()) if isinstance(timeout_ns, interpreter.TensorHandle) else None
        matched = np.zeros(ptr.data.shape, dtype=np.bool_)
        me = threading.get_ident()
        start, progress = time.perf_counter_ns(), None
        try:
            for index in np.ndindex(ptr.data.shape):
                element = interpreter.TensorHandle(np.asarray(ptr.data[index]), ptr.dtype)
                while True:
                    with launch.lock:
                        seen = launch.writes
                    if seen != progress:
                        start, progress = time.perf_counter_ns(), seen
                    if self.create_load(element, None, True).data.item() == np.asarray(expected.data)[index]:
                        matched[index] = True
                        break
                    if limit is not None and time.perf_counter_ns() - start >= limit:
                        break
                    if limit is None:
                        with launch.lock:
                            launch.polling[me] = seen
                            if launch.deadlocked():
                                raise ThreadedDeadlockError(
                                    f"program {self.grid_idx} of grid {launch.grid}: every running program waits "
                                    "in tl.atomic_poll without a timeout for a value no program can still write"
                                )
                    time.sleep(0)  # let the programs we wait for run
        finally:
            with launch.lock:
                launch.polling.pop(me, None)
        return interpreter.TensorHandle(matched, tl.int1)

    def threaded_call(executor, *args, **kwargs):
        kernel = executor.fn
        calls, failures = [], []

        def run_every_program(**kernel_args):
            calls.append(_state.grid_idx)
            if len(calls) == 1:
                try:
                    _run_programs(interpreter, kernel, kernel_args)
                except RuntimeError as error:  # raised below, past Triton's wrapping of kernel errors
                    failures.append(error)

        run_every_program.__signature__ = inspect.signature(kernel)
        executor.fn = run_every_program
        try:
            original_call(executor, *args, **kwargs)
        finally:
            executor.fn = kernel
        if failures:
            raise failures[0]
        grid = tuple(interpreter.interpreter_builder.grid_dim)
        programs = grid[0] * grid[1] * grid[2]
        if len(calls) != programs or (programs and calls[0] != (0, 0, 0)):
            raise RuntimeError(
                f"threaded_programs: Triton's GridExecutor called the kernel {len(calls)} times for grid {grid}, "
                "expected once per program starting at (0, 0, 0); tests/threaded.py needs updating"
            )

    builder_class.grid_idx = property(
        lambda self: getattr(_state, "grid_idx", None), lambda self, value: setattr(_state, "grid_idx", value)
    )
    for name in _MEMORY_OPS:
        setattr(builder_class, name, memory_op(name))
    builder_class.create_atomic_poll = atomic_poll
    executor_class.__call__ = threaded_call
    try:
        yield
    finally:
        executor_class.__call__ = original_call
        for name, original in originals.items():
            setattr(builder_class, name, original)
        del builder_class.grid_idx


def _run_programs(interpreter, kernel, kernel_args):
    """Runs kernel(**kernel_args) once per program of the current grid, each in its own thread."""
    builder = interpreter.interpreter_builder
    grid = tuple(builder.grid_dim)
    launch = _Launch(grid)
    errors = []

    def program(x, y, z):
        _state.launch = launch
        try:
            builder.set_grid_idx(x, y, z)
            kernel(**kernel_args)
        except BaseException as error:  # noqa: BLE001 - every program's error is reported after the join
            errors.append(((x, y, z), error))
        finally:
            with launch.lock:
                launch.running -= 1
            _state.launch = None

    ids = [(x, y, z) for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])]
    launch.running = len(ids)
    threads = [threading.Thread(target=program, args=pid, name=f"program{pid}", daemon=True) for pid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A program that failed leaves the others waiting for it: its error is the one to report.
    failures = [(pid, error) for pid, error in errors if _deadlock_in(error) is None]
    if failures:
        pid, error = min(failures, key=lambda failure: failure[0])
        raise RuntimeError(f"program {pid} of grid {grid}: {error!r}") from error
    if errors:
        raise _deadlock_in(errors[0][1])


def _deadlock_in(error):
    """The ThreadedDeadlockError behind `error` (Triton wraps errors of device functions), if any."""
    while error is not None:
        if isinstance(error, ThreadedDeadlockError):
            return error
        error = error.__cause__ or error.__context__
    return None
