"""The one exception type the command line turns into a one-line message and exit status 2,
and the warning category it shows as a "bioknow: warning:" line."""


class InputError(ValueError):
    """Bad input from the user: a wrong argument, a missing or malformed file."""


class BioknowWarning(UserWarning):
    """A measurement that will run but may mislead (too few steps, a figure left out)."""
