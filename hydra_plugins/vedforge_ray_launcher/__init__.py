"""vedforge's configuration of hydra-ray-launcher, registered as ``hydra/launcher=ray`` (see ray_launcher)."""
