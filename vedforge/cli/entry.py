"""The ``vedforge`` console command and ``python -m vedforge``.

``vedforge --help`` is answered here, from the configuration files, before Hydra (or anything
else heavy) is imported; ``vedforge convert`` goes to :mod:`vedforge.cli.subcommands`
without it, and every other command line goes to :func:`vedforge.cli.main.entry`.
"""

from __future__ import annotations

import sys

_HELP_FLAGS = (["--help"], ["-h"])


def entry() -> None:
    """Print the help text for a bare ``--help``; otherwise run :func:`vedforge.cli.main.entry`."""
    if sys.argv[1:] in _HELP_FLAGS:
        from vedforge.cli.help_text import render_help
        from vedforge.core.resources import config_dir, recipes_dir

        text = render_help(config_dir(), recipes_dir())
        if text is not None:
            try:
                print(text, flush=True)
            except BrokenPipeError:
                # `vedforge --help | head`: the reader has all it wanted.
                sys.stdout = None
            return
    if sys.argv[1:2] == ["convert"]:
        # verify may compose recipes, which needs the resolvers vedforge.cli.main registers.
        from vedforge.cli.subcommands import main as subcommand_main

        subcommand_main(sys.argv[1:])
    from vedforge.cli.main import entry as cli_entry

    cli_entry()
