"""The one error type the CLI turns into a single line on stderr and a non-zero exit."""


class VQSearchError(Exception):
    """A problem with the user's input or environment, worded for the user."""
