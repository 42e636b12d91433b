"""circuitlab: locate knowledge circuits in language models and enhance them with HeadMap."""

__version__ = "0.1.0"

from circuitlab.errors import CircuitlabError

__all__ = ["CircuitlabError", "__version__"]
