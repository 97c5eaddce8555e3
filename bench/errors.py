"""The errors a user can cause: each is one line, printed as ``bench: error: …`` with exit code 2.

Kept apart from the modules that raise them so that the command line can catch them without importing
torch (``report``, ``compare`` and ``index`` never need it).
"""


class BenchError(ValueError):
    """A mistake in what bench was given. The message is one line: where, what is wrong, what is allowed."""

    def __init__(self, message: str = ""):
        super().__init__(" ".join(str(message).split()))  # a name or value from a file may hold line breaks


class SuiteError(BenchError):
    """A suite, or a command-line argument, that cannot run."""


class ReportError(BenchError):
    """A results folder, or a report option, that cannot make a report."""
