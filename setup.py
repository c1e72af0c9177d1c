"""Only the package layout is here (everything else is in pyproject.toml): kernels/ installs as rnnfast.kernels,
and the same mapping drives the editable install."""

from setuptools import setup

setup(
    packages=["rnnfast", "rnnfast.kernels", "rnnfast.seq2seq"],
    # Triton code lives in kernels/ but is only ever importable as rnnfast.kernels.
    package_dir={"rnnfast": "rnnfast", "rnnfast.kernels": "kernels"},
)
