"""The one error type for bad user input: the CLI prints its message on one line and exits 2."""

import contextlib
import sys
from typing import Iterator


class InputError(ValueError):
    """Bad input named by a one-line message (the file and the problem), never a traceback."""


@contextlib.contextmanager
def exiting_on_input_error() -> Iterator[None]:
    """Report an InputError raised inside as nerfstudio's CLIs report a usage error -- one line on
    stderr, exit status 2 -- without the traceback of the call chain (for code that ns-train runs)."""
    try:
        yield
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
