"""``python -m vedforge.compat SCRIPT [ARGS...]``: run a script with vedforge's fixes installed.

As ``python -m cProfile`` does: the script runs as ``__main__`` with ``sys.argv`` set to
``[SCRIPT, ARGS...]`` and its own directory first on ``sys.path``, after
:func:`vedforge.compat.install` has fixed transformers' Flax classes for this process. So an
unchanged training script (transformers' image-captioning example, or your own) trains and
generates with every pairing vedforge forges. ``-m MODULE [ARGS...]`` runs a module instead.
"""

from __future__ import annotations

import os
import re
import runpy
import sys

from vedforge.compat import install
from vedforge.core.errors import EXIT_USER_ERROR

USAGE = "usage: python -m vedforge.compat SCRIPT [ARGS...]  |  python -m vedforge.compat -m MODULE [ARGS...]"
# reST markup in the docstring: :func:`name` and ``literal``.
_ROLE = re.compile(r":\w+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def help_text() -> str:
    """The usage line and the module's docstring, as plain text."""
    body = __doc__.split("\n\n", 1)[1].strip()
    return USAGE + "\n\n" + _LITERAL.sub(r"\1", _ROLE.sub(r"\1()", body))


def main(argv: list[str]) -> int:
    """Run the script or module named in ``argv`` with the fixes installed; its exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), file=sys.stderr if not argv else sys.stdout)
        return EXIT_USER_ERROR if not argv else 0
    if argv[0] == "-m":
        if len(argv) < 2:
            print(f"vedforge.compat: error: -m needs a module name.\n{USAGE}", file=sys.stderr)
            return EXIT_USER_ERROR
        install()
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    script = argv[0]
    if not os.path.isfile(script):
        print(f"vedforge.compat: error: the script '{script}' does not exist or is not a file. Give the path of "
              f"a Python script to run with vedforge's fixes installed.\n{USAGE}", file=sys.stderr)
        return EXIT_USER_ERROR
    install()
    sys.argv = argv
    # As `python SCRIPT` does: the script's directory, not vedforge's, comes first on the path.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
