"""Triton kernels of rnnfast (installed as rnnfast.kernels). Imports triton; knows nothing of nn.Module."""

from .lstm import lstm_scan_bwd, lstm_scan_fwd

__all__ = ["lstm_scan_fwd", "lstm_scan_bwd"]
