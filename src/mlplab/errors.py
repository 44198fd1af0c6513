"""The one error type a user sees: the CLI prints its message on one line and exits with 2."""


class UserError(Exception):
    """Bad input from the user (a suite, a flag, a data file). The message names what is wrong
    and what is allowed; nothing has been written when it is raised."""
