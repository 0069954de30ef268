"""The one error type for bad user input: the CLI prints its message on one line and exits 2."""


class InputError(ValueError):
    """Bad input named by a one-line message (the file and the problem), never a traceback."""
