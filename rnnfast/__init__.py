"""rnnfast: torch.nn recurrent layers on fused Triton kernels, with a pure-PyTorch fallback."""

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]
__version__ = "0.1.0"
