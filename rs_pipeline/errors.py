"""Errors a user can cause: raised with one clear message naming the file, row, column or setting."""


class InputError(ValueError):
    """Bad input (file, column, row or config setting) that the user can fix."""
