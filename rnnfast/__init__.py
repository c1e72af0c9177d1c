"""rnnfast: torch.nn recurrent layers on fused Triton kernels, with a pure-PyTorch fallback."""

from .convert import convert, revert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "revert"]
__version__ = "0.1.0"
