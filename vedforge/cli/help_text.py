"""``vedforge --help``, rendered from the configuration files without starting Hydra.

Hydra answers ``--help`` by composing the whole recipe and listing every config group, which
deep-copies its config repository once per group: about half a second, longer than everything
else ``--help`` needs. The text is simple to render from ``conf/``: the template in
``conf/hydra/help/vedforge.yaml``, the options of each group (a file per option), and the
default recipe composed from the schema and the defaults list of ``conf/config.yaml``. A test
keeps it identical to Hydra's rendering. Whenever the files use something this renderer does not
handle (a group default with a package or a defaults list of its own, a placeholder other than
the groups and the recipe), :func:`render_help` returns None and Hydra answers.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Optional

_HELP_FILE = Path("hydra") / "help" / "vedforge.yaml"
_PLACEHOLDERS = {"APP_CONFIG_GROUPS", "CONFIG"}


def _group_options(conf: Path, recipes: Path) -> dict[str, list[str]]:
    """Every non-Hydra config group and its options, as Hydra lists them."""
    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in conf.iterdir()
              if d.is_dir() and d.name != "hydra"}
    groups["recipe"] = sorted(p.stem for p in recipes.glob("*.yaml"))
    return {name: options for name, options in groups.items() if options}


def _default_recipe(conf: Path) -> Optional[Any]:
    """The recipe ``conf/config.yaml`` composes with no overrides, or None if it needs Hydra."""
    from omegaconf import OmegaConf

    from vedforge.recipe.schema import ForgeConfig

    primary = OmegaConf.load(conf / "config.yaml")
    composed = OmegaConf.structured(ForgeConfig)
    for entry in primary.get("defaults", []):
        if entry in ("vedforge_schema",):
            continue
        if entry == "_self_":
            own = OmegaConf.masked_copy(primary, [k for k in primary if k not in ("defaults", "hydra")])
            composed = OmegaConf.merge(composed, own)
            continue
        if not isinstance(entry, (dict, type(primary))) or len(entry) != 1:
            return None
        (key, option), = entry.items()
        if key.startswith(("override hydra/", "optional ")) and (key.startswith("override") or option is None):
            continue  # Hydra's own groups, and the empty optional recipe slot
        group_file = conf / key / f"{option}.yaml"
        if "/" in key or not group_file.is_file():
            return None
        text = group_file.read_text()
        node = OmegaConf.create(text)
        if "@package" in text or "defaults" in node:
            return None
        composed = OmegaConf.merge(composed, {key: node})
    return composed


def render_help(conf: Path, recipes: Path) -> Optional[str]:
    """The text Hydra prints for ``vedforge --help``, or None where only Hydra can render it."""
    from omegaconf import OmegaConf

    help_cfg = OmegaConf.create({"hydra": {"help": OmegaConf.load(conf / _HELP_FILE)}}).hydra.help
    template = string.Template(help_cfg.template)
    used = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)} - {None}
    if not used <= _PLACEHOLDERS:
        return None
    recipe = _default_recipe(conf)
    if recipe is None:
        return None
    groups = "".join(f"{group}: {', '.join(options)}\n" for group, options in sorted(_group_options(conf, recipes).items()))
    return template.substitute(APP_CONFIG_GROUPS=groups, CONFIG=OmegaConf.to_yaml(recipe, resolve=False))
