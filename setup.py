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
    # triton is not required: torch's CUDA wheels bring the triton they pin (a wide range here, so as not
    # to fight that pin), and a CPU-only install runs everything without it (about 1 GB saved).
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "triton": ["triton>=3.0"],
        "seq2seq": ["num2words", "sacrebleu", "tqdm", "matplotlib"],
        # The tests run the Triton kernels through Triton's interpreter, on CPU.
        "test": ["pytest", "triton>=3.0", "num2words", "sacrebleu", "tqdm", "matplotlib"],
    },
)
