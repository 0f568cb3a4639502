"""Exception classes and the process exit codes they map to.

Every error a user can cause derives from :class:`VedforgeError`; the CLI prints its
message as one paragraph and exits with :data:`EXIT_USER_ERROR`. Anything else that
escapes a forge is a bug in vedforge or below it and exits with :data:`EXIT_INTERNAL_ERROR`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


def first_line(exc: BaseException) -> str:
    """The first line of a library exception's message, at most 200 characters, for quoting in a
    one-paragraph error; ``no detail`` when the message is empty."""
    text = str(exc)
    return text.splitlines()[0][:200] if text.strip() else "no detail"


class VedforgeError(Exception):
    """A problem with the recipe, the inputs or the environment that the user can fix."""


class RecipeError(VedforgeError):
    """The composed recipe is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"Invalid recipe: {self.problems[0]}"
        else:
            listed = " ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
            message = f"Invalid recipe, {len(self.problems)} problems: {listed}"
        super().__init__(message)


class SourceNotFoundError(VedforgeError):
    """A checkpoint named by the recipe cannot be found locally, in the cache, or on the hub."""


class NotACheckpointError(VedforgeError):
    """A directory exists but does not hold a loadable checkpoint (no config, no weights)."""


class UnsupportedModelError(VedforgeError):
    """The model type cannot take the role the recipe gives it (encoder or decoder)."""


class ConfigOverrideError(VedforgeError):
    """A ``config_overrides`` entry does not fit the model configuration."""


class CorruptCheckpointError(VedforgeError):
    """A checkpoint file exists but cannot be parsed."""


class TokenPolicyError(VedforgeError):
    """The token policy cannot resolve one of the special token ids."""


class OutputError(VedforgeError):
    """The output location cannot be written, or holds an artifact that must not be replaced."""


class BackendError(VedforgeError):
    """The chosen backend cannot run here (PyTorch missing or hidden) or cannot forge this pairing."""


class FlaxUnavailableError(ImportError):
    """transformers' Flax classes (or jax and flax) are missing, so a Flax-only module cannot be
    imported: raised by ``import vedforge.compat`` under transformers 5, with the install command."""
