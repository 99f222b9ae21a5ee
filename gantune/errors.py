"""The one exception type a user sees: a clear, one-line reason, never a traceback."""


class GantuneError(Exception):
    """A problem with the user's input or environment, worded for the user."""
