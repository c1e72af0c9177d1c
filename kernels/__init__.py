"""Triton kernels of rnnfast (installed as rnnfast.kernels). Imports triton; knows nothing of nn.Module."""

from .elman import elman_scan_bwd, elman_scan_fwd
from .gru import gru_scan_bwd, gru_scan_fwd
from .lstm import lstm_scan_bwd, lstm_scan_fwd

__all__ = ["lstm_scan_fwd", "lstm_scan_bwd", "gru_scan_fwd", "gru_scan_bwd", "elman_scan_fwd", "elman_scan_bwd"]
