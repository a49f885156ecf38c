"""The exceptions the CLI turns into a one-line `entropyscope: error: ...`: UsageError (bad input, exit code 2)
and RunFailed (a fault of the machine, such as a full disk, exit code 1)."""

import errno

STORE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""errno values that mean the store takes no more writes (disk full, quota, read-only): a fault of the machine,
not of the input; a run stopped by one resumes from its last checkpoint once space is freed."""


class UsageError(Exception):
    """Bad input (config, flag, file, path): the message says what is wrong and how to fix it."""


class RunFailed(Exception):
    """A run stopped by its environment (full or read-only store): the message says how to continue it."""
