"""``vedforge verify DIR``: the command line of :mod:`vedforge.pipeline.verify`."""

from __future__ import annotations

from pathlib import Path

from vedforge.pipeline.verify import EXIT_MISMATCH, recorded_recipe, verify

def main(argv: list[str]) -> int:
    """Entry of ``vedforge verify DIR``; returns the exit code."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(
        prog="vedforge verify",
        description="Forge an artifact's recorded recipe again and compare every file's sha256 with the "
        "manifest and with the files on disk. Exit 0 when all match, 1 when any differs.",
    )
    parser.add_argument("directory", type=Path, help="an artifact directory written by vedforge")
    args = parser.parse_args(argv)
    from vedforge.recipe.backends import configure_flax_import, configure_torch_import, needs_flax, needs_torch

    recorded = recorded_recipe(args.directory.absolute())
    # Before the forge imports transformers: torch only if the recorded recipe writes PyTorch weights.
    configure_torch_import(recorded[1] is None or needs_torch(recorded[1]))
    # A conversion's source is a Flax checkpoint, but converting it reads no Flax class.
    configure_flax_import(recorded[1] is not None and needs_flax(recorded[1]))
    checks = verify(args.directory, recorded)
    table = Table(title=f"verify {args.directory}")
    for column in ("file", "status", "recorded sha256", "rebuilt sha256"):
        table.add_column(column)
    for c in checks:
        style = "green" if c.status == "ok" else "red"
        table.add_row(c.name, f"[{style}]{c.status}[/{style}]", (c.recorded or "-")[:16], (c.rebuilt or "-")[:16])
    console = Console()
    console.print(table)
    bad = [c for c in checks if c.status != "ok"]
    if bad:
        console.print(f"[red]{len(bad)} of {len(checks)} files differ: {', '.join(c.name + ' (' + c.status + ')' for c in bad)}")
        return EXIT_MISMATCH
    console.print(f"[green]All {len(checks)} files match the manifest.")
    return 0
