"""The exit codes of every llmdeploy command, and the two kinds of error behind them: bad input the user must
fix (UsageError, exit 2) and something that ran and did not work (Failure, exit 1).

Every error llmdeploy raises derives from one of the two; the top-level CLI (llmdeploy/cli.py) catches them
once and prints the message, never a traceback. A message names the problem and the fix.
"""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class LlmdeployError(Exception):
    """What the CLI catches: `exit_code` is the code it exits with."""

    exit_code = EXIT_FAILED


class UsageError(LlmdeployError, ValueError):
    """Bad input (an argument, a config value, a file, a missing tool or setting): exit 2."""

    exit_code = EXIT_USAGE


class Failure(LlmdeployError, RuntimeError):
    """Something that ran and did not work (a tool, the VM, the cloud, an unconfirmed prompt): exit 1."""

    exit_code = EXIT_FAILED
