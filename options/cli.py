"""Command-line plumbing shared by every entry point (``train.py``, ``test.py``, ``scripts/``).

- ``run(main)`` calls ``main(argv)`` and turns the project's user errors (option files, weights
  files, data, arguments, the file system) into one line ``error: ...`` on stderr (plus a
  ``hint: ...`` line when the error carries one) and exit status 2. Anything else is a bug and
  keeps its traceback; ``VIDRESTORE_DEBUG=1`` shows the traceback of user errors too.
- ``ArgumentParser``: ``--help`` shows every option's default and keeps the description's layout.
- Argument types with ranges (``positive_int``, ``finite_positive_float``, ...): the parser itself
  refuses out-of-range values, before anything runs.

Light on purpose: importing it imports neither torch nor the rest of the project.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

DEBUG_ENV_VAR = "VIDRESTORE_DEBUG"
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report it

# The project's user-error classes, by module. An instance can exist only once its module has
# been imported, so they are looked up in sys.modules: nothing is imported to classify an error.
USER_ERROR_CLASSES = (
    ("options.cli", "UsageError"),
    ("options.parse", "OptionsError"),
    ("data.storage", "DataError"),
    ("models.checkpoint", "CheckpointError"),
    ("models.outputs", "OutputError"),
    ("models.guard", "TrainingDiverged"),
    ("ops.dcn.build", "NativeBuildError"),
    ("ops.dcn.backends", "BackendUnavailable"),
)


class UsageError(Exception):
    """Arguments that cannot work together (ranges of single arguments are the parser's job).

    ``hint``: an optional second line telling the user what to do instead.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is the user's to fix (bad input or environment), not a bug of ours."""
    if isinstance(error, OSError):  # missing or unreadable files, full disk, permissions
        return True
    for module_name, class_name in USER_ERROR_CLASSES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(error, cls):
            return True
    return False


def describe(error: BaseException) -> str:
    """The ``error: ...`` text for a user error (and its ``hint: ...`` line, if any)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    hint = getattr(error, "hint", None)
    return f"error: {text}" + (f"\nhint: {hint}" if hint else "")


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run an entry point; returns its exit status: the integer ``main`` returns (0 for anything
    else, e.g. a summary), 2 for a user error, 130 on Ctrl-C."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED_STATUS
    except Exception as error:
        if not is_user_error(error) or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0"):
            raise
        sys.stdout.flush()
        print(describe(error), file=sys.stderr, flush=True)
        return USER_ERROR_STATUS
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description printed as written; each option's default after its help, where it has one
    (not for flags, nor for options that are off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def ArgumentParser(**kwargs) -> argparse.ArgumentParser:  # noqa: N802 (stands in for the class)
    """``argparse.ArgumentParser`` with ``HelpFormatter``."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    return argparse.ArgumentParser(**kwargs)


def _bounded(kind: Callable[[str], float], name: str, check: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return value

    parse.__name__ = name  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, "an integer >= 1", lambda v: v >= 1)
non_negative_int = _bounded(int, "an integer >= 0", lambda v: v >= 0)
finite_positive_float = _bounded(float, "a finite number > 0", lambda v: v > 0)
finite_non_negative_float = _bounded(float, "a finite number >= 0", lambda v: v >= 0)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` to ``high`` (inclusive)."""
    return _bounded(int, f"an integer from {low} to {high}", lambda v: low <= v <= high)
