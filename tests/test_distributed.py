"""rnnfast layers under data parallelism on CPU (gloo, two processes): DistributedDataParallel and FSDP2's
fully_shard give the gradients of one process on the concatenated batch. FSDP1
(FullyShardedDataParallel) refuses to run without an accelerator, whatever the module, so it has no test
here."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import rnnfast
from tests.oracle import assert_matches

# Its expensive module fixtures are made once: pytest-xdist runs this module on one worker.
pytestmark = pytest.mark.xdist_group("test_distributed")

WORLD_SIZE, BATCH, SEQ_LEN, INPUT = 2, 4, 5, 3
BACKENDS = ["scan", "triton"]


class Encoder(nn.Module):
    def __init__(self, backend: str):
        super().__init__()
        self.lstm = rnnfast.LSTM(INPUT, 4, num_layers=2, bidirectional=True, backend=backend)
        self.gru = rnnfast.GRU(8, 3, backend=backend)

    def forward(self, x):
        return self.gru(self.lstm(x)[0])[0]


def make_model_and_batch(backend: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Encoder(backend), torch.randn(SEQ_LEN, BATCH, INPUT)


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).pow(2).mean()


WRAPPERS = ["ddp", "fsdp2"]


def _worker(rank: int, port: int, results: str) -> None:
    """Every (wrapper, backend) in one process group: rank 0 saves the gradients of each."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        found = {}
        for wrapper in WRAPPERS:
            for backend in BACKENDS:
                model, x = make_model_and_batch(backend)
                local = x.chunk(WORLD_SIZE, dim=1)[rank]
                if wrapper == "ddp":
                    wrapped = nn.parallel.DistributedDataParallel(model)
                else:
                    from torch.distributed.fsdp import fully_shard

                    for layer in (model.lstm, model.gru):
                        fully_shard(layer)
                    wrapped = fully_shard(model)
                loss_of(wrapped, local).backward()
                found[wrapper, backend] = {
                    name: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                    for name, p in model.named_parameters()
                }
        if rank == 0:
            torch.save(found, results)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def parallel_gradients(tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("distributed") / "grads.pt"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(results)), nprocs=WORLD_SIZE)
    return torch.load(results)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_data_parallel_gradients_equal_one_process(wrapper, backend, parallel_gradients):
    model, x = make_model_and_batch(backend)
    loss_of(model, x).backward()
    grads = parallel_gradients[wrapper, backend]
    assert grads.keys() == dict(model.named_parameters()).keys()
    for name, parameter in model.named_parameters():
        assert_matches(grads[name], parameter.grad, torch.float32, f"{wrapper} grad of {name}")
