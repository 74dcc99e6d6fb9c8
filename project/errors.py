"""The one exception users see: a message that names the file, key or path and what would be accepted.

The CLI prints it on one line and exits with status 2, never with a traceback.
"""


class UserError(Exception):
    """Bad input from the user (a card, an override, a dataset, a missing file)."""
