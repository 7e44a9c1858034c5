"""One exception type for user mistakes: the CLI prints its message as one line and exits 2."""


class DistillError(Exception):
    """A user-facing error. The message names the problem and the fix, in one line."""
