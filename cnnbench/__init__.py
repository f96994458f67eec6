"""cnnbench: run, compare and reproduce convolutional-network studies from the command line."""

__version__ = "0.1.0"
