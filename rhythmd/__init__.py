"""rhythmd: a training-rhythm debugger for PyTorch."""

__version__ = "0.1.0"
