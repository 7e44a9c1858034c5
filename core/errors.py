"""User mistakes (the CLI prints one line and exits 2) and unfinished teacher work (exits 3)."""


class DistillError(Exception):
    """A user-facing error. The message names the problem and the fix, in one line."""


class RequestsIncomplete(Exception):
    """A stage ended with teacher requests failed or left; the message is the one-line tally.
    The work that succeeded is in the store: running the same command again retries the rest."""
