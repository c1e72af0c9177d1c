from setuptools import setup

setup(
    name="rnnfast",
    version="0.1.0",
    description="Drop-in torch.nn LSTM/GRU/RNN on fused Triton kernels, with a pure-PyTorch CPU fallback",
    python_requires=">=3.10",
    packages=["rnnfast", "rnnfast.kernels", "rnnfast.seq2seq"],
    # Triton code lives in kernels/ but is only ever importable as rnnfast.kernels.
    package_dir={"rnnfast": "rnnfast", "rnnfast.kernels": "kernels"},
    # torch.library.custom_op with register_autograd and per-device autocast queries need torch 2.4.
    install_requires=["torch>=2.4", "numpy", "triton>=3.0; platform_system == 'Linux'"],
    extras_require={
        "seq2seq": ["num2words", "sacrebleu", "tqdm", "matplotlib"],
        "test": ["pytest", "num2words", "sacrebleu", "tqdm", "matplotlib"],
    },
)
