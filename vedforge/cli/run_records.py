"""Where Hydra's records and the log of a single forge go when ``output.dir`` is given.

Hydra creates its run directory (``outputs/<date>/<time>/``), writes ``.hydra/`` there and
opens the log there before the forge starts. When the command line names ``output.dir``, that
directory would be a second place written. Instead Hydra runs in a private temporary
directory; the forge copies ``.hydra/`` into the staged artifact (so it is published with it,
atomically), the log is appended to the artifact's ``vedforge.log`` once the artifact is in
place, and the temporary directory is removed whatever the outcome. Neither is hashed in the
manifest (they describe the run, not the model), so resume and verify are unaffected. Sweeps
keep Hydra's sweep directory.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

LOG_NAME = "vedforge.log"
_OUTPUT_DIR = re.compile(r"\+{0,2}output\.dir=")
_MULTIRUN = ("-m", "--multirun")


def private_run_dir(argv: list[str]) -> Optional[Path]:
    """A new temporary directory for Hydra's run when ``argv`` is a single forge that sets
    ``output.dir`` and leaves ``hydra.run.dir`` alone; otherwise None."""
    if any(a in _MULTIRUN for a in argv) or any(a.lstrip("+").startswith("hydra.run.dir=") for a in argv):
        return None
    if not any(_OUTPUT_DIR.match(a) for a in argv):
        return None
    return Path(tempfile.mkdtemp(prefix="vedforge-run-"))


def run_dir_override(run_dir: Path) -> str:
    """The Hydra override that puts the run in ``run_dir`` (quoted: a temp path may hold spaces)."""
    return f"hydra.run.dir='{run_dir}'" if "'" not in str(run_dir) else f'hydra.run.dir="{run_dir}"'


def append_log(run_dir: Path, artifact: Path) -> None:
    """Append this run's log (``run_dir/vedforge.log``) to the artifact's; earlier runs into the
    same directory (a resumed forge) keep their part."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    source = run_dir / LOG_NAME
    if not source.is_file() or not artifact.is_dir():
        return
    with source.open("rb") as src, (artifact / LOG_NAME).open("ab") as dst:
        shutil.copyfileobj(src, dst)


def remove_run_dir(run_dir: Path) -> None:
    """Close the log file Hydra opened in ``run_dir`` and remove the directory."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
            handler.close()
            root.removeHandler(handler)
    shutil.rmtree(run_dir, ignore_errors=True)
