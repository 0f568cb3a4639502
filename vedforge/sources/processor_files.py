"""An encoder's image processor carried as the file it is saved in.

A cross-attention forge only passes the encoder's image processor on: clients load it with
``AutoImageProcessor.from_pretrained(model_dir)``. Loading it here through transformers would
import the processor's class, and with it transformers' image transforms, which import jax (about
a second) whenever jax is installed; so the forge copies ``preprocessor_config.json`` as it is, and
rewrites it only to set the image size an ``image_size`` override asks for. Clients then load
exactly the processor the encoder ships (a test loads both and compares them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from vedforge.core.errors import VedforgeError

FILE_NAME = "preprocessor_config.json"


class ImageProcessorFiles:
    """The image processor of an encoder checkpoint, as its ``preprocessor_config.json``."""

    def __init__(self, path: Optional[Path], settings: dict[str, Any]):
        self.path = path  # the file to copy as it is; None for settings held inside another file
        self.settings = settings
        self._fitted: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        """The processor's settings as they will be saved."""
        return dict(self._fitted if self._fitted is not None else self.settings)

    def fit_to_image_size(self, image_size: int) -> None:
        """Make the processor emit images of ``image_size`` pixels a side: its ``size`` and
        ``crop_size``, where set, take that value in every dimension they name."""
        fitted = dict(self.settings)
        for key in ("size", "crop_size"):
            value = fitted.get(key)
            if isinstance(value, dict) and value:
                fitted[key] = {k: image_size for k in value}
            elif isinstance(value, int) and not isinstance(value, bool):
                fitted[key] = image_size  # the older form: one int for both sides
        if fitted != self.settings:
            self._fitted = fitted

    def save_pretrained(self, directory: str | Path) -> list[str]:
        """Write ``preprocessor_config.json`` into ``directory``: the encoder's own bytes, or, after
        :meth:`fit_to_image_size` changed it, in transformers' layout (sorted keys, indent 2)."""
        target = Path(directory) / FILE_NAME
        if self._fitted is None and self.path is not None:
            shutil.copyfile(self.path, target)
        else:
            target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return [str(target)]


def _nested_image_processor(folder: Path) -> Optional[dict[str, Any]]:
    """The image processor's settings inside a multimodal processor's ``processor_config.json``,
    where transformers 5 saves them (a LLaVA checkpoint's processor), else None."""
    try:
        data = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    nested = data.get("image_processor") if isinstance(data, dict) else None
    return nested if isinstance(nested, dict) else None


def read_processor_files(folder: Path, described: str) -> ImageProcessorFiles:
    """The image processor saved in ``folder`` (the encoder ``described``): its
    ``preprocessor_config.json``, or the image processor inside its ``processor_config.json``.

    Raises:
        VedforgeError: the folder has no ``preprocessor_config.json``, or it is not a JSON object.
    """
    path = Path(folder) / FILE_NAME
    nested = _nested_image_processor(Path(folder))
    if nested is not None and not path.is_file():
        return ImageProcessorFiles(None, nested)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VedforgeError(
            f"The image processor of the encoder {described} cannot be loaded (there is no {FILE_NAME} in {folder}). "
            f"The checkpoint needs a {FILE_NAME}."
        ) from None
    except (OSError, ValueError) as exc:
        raise VedforgeError(
            f"The image processor of the encoder {described} cannot be loaded ({path} is not valid JSON: {exc}). "
            f"The checkpoint needs a valid {FILE_NAME}."
        ) from None
    if not isinstance(settings, dict):
        raise VedforgeError(
            f"The image processor of the encoder {described} cannot be loaded ({path} holds a "
            f"{type(settings).__name__}, not the JSON object of an image processor's settings). "
            f"The checkpoint needs a valid {FILE_NAME}."
        )
    return ImageProcessorFiles(path, settings)
