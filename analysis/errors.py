"""The one exception type for bad user input; the CLI turns it into a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad input (config, flag, file, path): the message says what is wrong and how to fix it."""
