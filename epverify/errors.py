"""The one exception type users see: a message that says what was wrong and how to fix it."""


class EpverifyError(ValueError):
    """Bad input or an unrecoverable run condition, explained in one line for the user.

    The CLI prints the message (no traceback) and exits with status 2.
    """
