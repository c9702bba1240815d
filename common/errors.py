"""The base of every error a user can fix (bad data, config, checkpoint, unreachable board).

The CLI prints these as one clear message and exits with status 2 instead of a traceback. It lives
in this dependency-free package so that torch-side, board-side and driver code can all subclass it.
"""


class UserError(Exception):
    """Something the user must fix; the message says what and where (a path or key)."""
