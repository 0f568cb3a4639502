"""``hydra/launcher=ray`` as vedforge configures it: hydra-ray-launcher's launcher, fixed for
clusters that already run (the work is in :mod:`vedforge.sweeps.ray_launcher`).

Hydra instantiates launchers only from the ``hydra_plugins`` package, and finds them by importing
every public module in it; this one registers its config under the plugin's own name, ``ray``,
replacing the plugin's, so ``hydra/launcher=ray`` needs nothing else. Without the ray extra it
defines nothing, and Hydra reports ``ray`` as an unknown launcher option.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses would look to resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Sequence

try:
    # The plugin's own config module registers its `ray` option when first imported; importing
    # it here first means the store below always comes after it and wins.
    import hydra_plugins.hydra_ray_launcher._config as _plugin_config
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _PluginRayLauncher
except ImportError:  # vedforge installed without the ray extra
    _PluginRayLauncher = None

if _PluginRayLauncher is not None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.utils import JobReturn

    @dataclass
    class RayLauncherConf:
        """``hydra.launcher`` for ``hydra/launcher=ray``; ``ray.init`` holds ray.init's keyword arguments."""

        _target_: str = "hydra_plugins.vedforge_ray_launcher.ray_launcher.RayLauncher"
        ray: _plugin_config.RayConf = field(default_factory=lambda: _plugin_config.RayConf(init={
            # null: start a Ray cluster on this machine for the sweep (or join RAY_ADDRESS when set).
            # auto: join the cluster `ray start` runs on this machine. host:6379 (a head's GCS
            # address) or ray://host:10001 (Ray Client): join that cluster.
            "address": None,
            # For a cluster the sweep starts only: a running cluster keeps what `ray start` gave it.
            "num_cpus": None,
            "object_store_memory": None,
        }))

    class RayLauncher(_PluginRayLauncher):
        """hydra-ray-launcher's launcher that also sweeps on a cluster that already runs."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from vedforge.sweeps.ray_launcher import launch

            return launch(self, job_overrides, initial_job_idx)

    ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="vedforge")

    __all__: Any = ["RayLauncher", "RayLauncherConf"]
