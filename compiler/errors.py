"""Errors tinyc reports to users: one line that names what is wrong and how to fix it."""


class TinycError(Exception):
    """A problem with the user's input (model, data, options, board); printed without traceback."""


class UnsupportedError(TinycError):
    """The model uses something tinyc does not support."""
