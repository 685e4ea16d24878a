"""Errors a user can cause from the command line.

`training/__main__.py` prints a `UserError` as one line, `error: <message>`, and exits with code 2;
everything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (a path, a flag, a config file, a checkpoint), told in one line."""

    def __init__(self, message: str) -> None:
        # One line, so the CLI's `error: ...` stays a single line whatever the caller wrote.
        super().__init__(" ".join(str(message).split()))


class NonFiniteLoss(UserError):
    """Training diverged (NaN or infinite loss or gradient); the last good checkpoint is kept."""
