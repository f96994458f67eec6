"""cnnbench: run, compare and reproduce convolutional-network studies from the command line."""

import logging

__version__ = "0.1.0"

# A library prints nothing unless its user asks (the logging HOWTO); the CLI attaches its own handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())
