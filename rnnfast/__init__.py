"""rnnfast: torch.nn recurrent layers on fused Triton kernels, with a pure-PyTorch fallback."""

from .modules import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell"]
__version__ = "0.1.0"
