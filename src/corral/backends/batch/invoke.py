"""Running a scheduler's command: the one place the batch backends start a process."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from corral.errors import BackendError

__all__ = ["run_command", "COMMAND_TIMEOUT_S"]

#: A scheduler command that takes longer is hung (a controller that is down):
#: the caller logs it and tries again at the next poll.
COMMAND_TIMEOUT_S = 60.0


def run_command(argv: Sequence[str]) -> str:
    """Run a scheduler command (an argv list, never a shell); return its stdout.

    Raises:
        BackendError: it could not start, timed out or exited non-zero; the
            message names the program and ends with what it printed.
    """
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as error:
        raise BackendError(f"{argv[0]} could not run: {error}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise BackendError(f"{argv[0]} exited {done.returncode}: "
                           f"{' '.join(message[-2:]) or 'no message'}")
    return done.stdout
