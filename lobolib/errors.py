"""The one user-facing error type."""


class LoboError(Exception):
    """A problem the user can fix (bad parameters, a missing file, a model not available offline).

    The message says what is wrong and what to do; the CLI prints it on one line and exits 2.
    """
