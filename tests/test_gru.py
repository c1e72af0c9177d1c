"""rnnfast.GRU / GRUCell against torch.nn.GRU / GRUCell: the shared cell suite."""

import pytest
from torch import nn

import rnnfast
from tests.cell_suite import *  # noqa: F403  the checks every cell must pass
from tests.cell_suite import CellSpec


@pytest.fixture
def spec():
    return CellSpec(rnnfast.GRU, nn.GRU, rnnfast.GRUCell, nn.GRUCell)
