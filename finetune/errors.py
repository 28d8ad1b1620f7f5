"""Errors a user can fix: the command line prints their message (it says what to change) and exits 2."""


class UserError(Exception):
    """Base of every error whose message names the file, key or value and the fix; never shown as a traceback."""
