"""One exception type for bad input: the CLI turns it into one line and exit code 2."""


class CircuitlabError(Exception):
    """Bad input or an unavailable resource, reported to the user as one line."""
