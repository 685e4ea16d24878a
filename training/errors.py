"""Errors a user can cause from the command line.

`training/__main__.py` prints a `UserError` as one line, `error: <message>`, and exits with code 2;
everything else that escapes is a bug and keeps its traceback.
"""

import argparse
from pathlib import Path
from typing import NoReturn


class UserError(Exception):
    """A mistake in the user's input (a path, a flag, a config file, a checkpoint), told in one line."""

    def __init__(self, message: str) -> None:
        # One line, so the CLI's `error: ...` stays a single line whatever the caller wrote.
        super().__init__(" ".join(str(message).split()))


def check_folder_path(path: str | Path, flag: str) -> None:
    """A folder the command will write into must not be an existing file: found before the work, not
    when the first result is saved after it."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"{flag} {str(path)!r} is a file, not a folder")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `docker stop`, torchrun stopping its other ranks) during training: handled as
    Ctrl-C is, a checkpoint at the last completed step, then exit code 143 (128 + SIGTERM)."""


class NonFiniteLoss(UserError):
    """Training diverged (NaN or infinite loss or gradient); the last good checkpoint is kept."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are one-line UserErrors named after the command (`prog`'s last word)."""

    def error(self, message: str) -> NoReturn:  # not argparse's usage + exit(2): __main__ prints one line
        raise UserError(f"{self.prog.split()[-1]}: {message}")
