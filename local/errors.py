"""The local stack's expected failure."""


class StackError(RuntimeError):
    """An expected failure; the message is one line that says what to do."""
