"""Two exception types for bad input: the CLI turns both into one line and exit code 2."""


class CircuitlabError(Exception):
    """Bad input or an unavailable resource, reported to the user as one line."""


class ConfigError(CircuitlabError):
    """A config field with a value it cannot take.

    The library names the field (`max_batch_tokens must be positive, got 0`); the CLI, which knows
    which flag set it, says the flag instead (`--max-batch-tokens must be positive, got 0`).
    """

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")
