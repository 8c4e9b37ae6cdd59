class AlambicError(Exception):
    """A problem the user can fix: the CLI prints it as one line and exits non-zero."""


class GateBlocked(AlambicError):
    """The release gate blocked the student: not a mistake but a verdict, told apart by its exit status (3)."""

    exit_code = 3
