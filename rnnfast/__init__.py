"""rnnfast: drop-in torch.nn recurrent layers (LSTM, GRU, RNN and their cells) on fused Triton kernels."""

from .convert import convert, revert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "revert"]
__version__ = "0.1.0"
