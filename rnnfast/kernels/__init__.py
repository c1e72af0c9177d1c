"""Triton kernels of rnnfast (installed as rnnfast.kernels). Imports triton; knows nothing of nn.Module."""

from .gru import gru_scan_bwd, gru_scan_fwd
from .launch import Wavefront
from .lstm import lstm_scan_bwd, lstm_scan_fwd
from .rnn import rnn_scan_bwd, rnn_scan_fwd

__all__ = [
    "Wavefront",
    "lstm_scan_fwd",
    "lstm_scan_bwd",
    "gru_scan_fwd",
    "gru_scan_bwd",
    "rnn_scan_fwd",
    "rnn_scan_bwd",
]
