"""Errors the core raises for the CLI to turn into exit codes.

The core never prints or exits; it raises one of these with a one-line message that names the bad value and what is
accepted. The CLI maps `UsageError` to exit code 2 and `CheckFailed` to exit code 1.
"""


class CnnbenchError(Exception):
    """Base class: anything cnnbench can explain to a user in one line."""

    exit_code = 2


class UsageError(CnnbenchError):
    """Bad usage or bad input: unknown name, malformed value, missing file. Exit code 2."""

    exit_code = 2


class DataMissing(UsageError):
    """A dataset's files are not under --root and no download was asked for (or possible)."""


class CheckFailed(CnnbenchError):
    """A check the user asked for did not pass (e.g. a parameter budget was exceeded). Exit code 1."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers, containers and `kill` send), raised where Ctrl-C would be, so a training run writes
    its summary as interrupted and says how to resume, exactly as for Ctrl-C. The CLI installs the handler."""
