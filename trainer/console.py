"""What reaches the user's console: our own warnings as one line each, other libraries' warnings, log lines and
progress bars kept out (transformers' FutureWarnings, its "Writing model shards" bar), and a first line that says
what a long command is doing before it imports torch.

`python -W default ...` (or PYTHONWARNINGS) shows every library warning again, as Python prints it.
"""

import os
import sys
import warnings
from pathlib import Path
from typing import TextIO

_OWN_CODE = tuple(
    str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("analysis", "trainer", "app")
)
# Read once, when transformers / huggingface_hub / tokenizers are imported, and inherited by child processes
# (the ranks of --nproc, a sweep's trainings); setdefault, so a user's own setting wins.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' tqdm bars ("Writing model shards", "Loading weights")
    "TRANSFORMERS_VERBOSITY": "error",  # its logger's warnings about generation settings and the like
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",  # else a fork after tokenising prints a warning from Rust
}
# Our code raises none of these: an API deprecation attributed to our line (stacklevel) is a library's notice.
LIBRARY_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_python_format_warning = warnings.formatwarning


def is_own(category: type[Warning], filename: str) -> bool:
    return filename.startswith(_OWN_CODE) and not issubclass(category, LIBRARY_CATEGORIES)


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """Our own warnings (a damaged file skipped, an endpoint down) as one line `entropyscope: warning: ...`;
    other libraries' as Python prints them."""
    if is_own(category, filename):
        return f"entropyscope: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """warnings.showwarning that prints only our own warnings."""
    out = file or sys.stderr
    if out is not None and is_own(category, filename):
        out.write(format_warning(message, category, filename, lineno, line))


def quiet_libraries() -> None:
    """Keep library chatter out of the console; call before transformers is imported."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.formatwarning = format_warning
    if not sys.warnoptions and not _recording():  # -W or PYTHONWARNINGS: the user asked to see them
        warnings.showwarning = show_warning


def _recording() -> bool:
    """True inside catch_warnings(record=True) (pytest runs every test in one): replacing showwarning there
    would hide warnings from the recorder (pytest.warns) instead of from a console."""
    return "warnings" not in (getattr(warnings._showwarnmsg_impl, "__module__", None) or "")
