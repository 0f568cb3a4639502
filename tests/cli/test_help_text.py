"""``vedforge --help`` without Hydra: the same text as Hydra's, at a fraction of the start-up."""

from __future__ import annotations

import shutil
import subprocess
import sys

from vedforge.cli.help_text import render_help
from vedforge.core.resources import config_dir, recipes_dir

_HYDRAS_HELP = "import sys; sys.argv = ['vedforge', '--help']; from vedforge.cli.main import main; main()"


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_help_is_the_text_hydra_renders(tmp_path):
    hydras = _run(["-c", _HYDRAS_HELP], tmp_path).stdout
    ours = _run(["-m", "vedforge", "--help"], tmp_path).stdout
    assert "Config groups" in hydras and "builtin:vit_tiny" in hydras
    assert ours == hydras
    assert _run(["-m", "vedforge", "-h"], tmp_path).stdout == hydras


def test_help_starts_neither_hydra_nor_jax(tmp_path):
    probe = ("import sys, runpy; sys.argv = ['vedforge', '--help']\n"
             "runpy.run_module('vedforge', run_name='__main__')\n"
             "print('LOADED', sorted(m for m in ('hydra', 'jax', 'transformers', 'flax', 'torch') if m in sys.modules))")
    result = _run(["-c", probe], tmp_path)
    assert "LOADED []" in result.stdout and "Config groups" in result.stdout


def test_help_with_overrides_is_still_hydras(tmp_path):
    # Hydra composes the overrides into the recipe it shows.
    result = _run(["-m", "vedforge", "encoder=beit_tiny", "--help"], tmp_path)
    assert "builtin:beit_tiny" in result.stdout


def _conf_copy(tmp_path):
    conf, recipes = tmp_path / "conf", tmp_path / "recipes"
    shutil.copytree(config_dir(), conf)
    shutil.copytree(recipes_dir(), recipes)
    return conf, recipes


def test_a_new_option_file_is_listed(tmp_path):
    conf, recipes = _conf_copy(tmp_path)
    shutil.copy(conf / "encoder" / "vit_tiny.yaml", conf / "encoder" / "my_vit.yaml")
    text = render_help(conf, recipes)
    assert "encoder: any, beit, beit_tiny, " in text and "my_vit" in text.split("encoder:")[1].splitlines()[0]


def test_what_only_hydra_can_render_is_left_to_hydra(tmp_path):
    conf, recipes = _conf_copy(tmp_path)
    assert render_help(conf, recipes) == render_help(config_dir(), recipes_dir())
    original = (conf / "encoder" / "vit_tiny.yaml").read_text()
    (conf / "encoder" / "vit_tiny.yaml").write_text("# @package _global_\n" + original)
    assert render_help(conf, recipes) is None
    (conf / "encoder" / "vit_tiny.yaml").write_text(original)
    help_file = conf / "hydra" / "help" / "vedforge.yaml"
    help_file.write_text(help_file.read_text().replace("$CONFIG", "$CONFIG\n  $FLAGS_HELP"))
    assert render_help(conf, recipes) is None


def test_help_lists_every_command_and_every_exit_code():
    from vedforge.core.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR
    from vedforge.pipeline.verify import EXIT_MISMATCH

    text = render_help(config_dir(), recipes_dir())
    commands = text.split("Commands")[1].split("\n\n")[0].splitlines()[1:]
    for command in ("plan", "verify", "convert"):
        assert [line for line in commands if line.split()[:2] == ["vedforge", command]], (command, commands)
    codes = text.split("Exit codes:")[1].splitlines()[1:]
    listed = {int(line.split()[0]) for line in codes if line[:1] == " " and line.split()[0].isdigit()}
    assert listed == {EXIT_OK, EXIT_MISMATCH, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED}
    assert "verify" in next(line for line in codes if line.split()[0] == str(EXIT_MISMATCH))
