"""The errors of the workshop commands, each with the exit code the CLI turns it into."""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class WorkshopError(Exception):
    """Something the user must fix (bad input, missing tool or file): the message names the problem and the
    fix. Exit code 2 unless said otherwise (1 when a tool that ran reported a failure)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
