"""The error a user can cause: the CLI turns it into one line and exit status 2."""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input (file, name, shape, number): the message says what to change."""
