"""Derivations that need transformers' PyTorch classes, run where those classes are.

A forge of pretrained parts reads what it needs of the PyTorch classes (tensor names, the
tokens a tower emits) off models built on the meta device, once per configuration
(:mod:`vedforge.core.derived_cache` keeps the results). The command line runs such a forge with
torch hidden from transformers (``USE_TORCH=0``: importing transformers otherwise imports torch,
about a second and a quarter of a GB), so on a cache miss the derivation runs in one worker
process of the same Python, started on the first miss and kept for the next ones. Where
transformers in this process has its PyTorch classes (a user's own program), it runs here.

A call names its function as ``"package.module:function"``; arguments and result are JSON. A
:class:`~vedforge.core.errors.VedforgeError` raised in the worker is raised here again, with its
class and message.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import subprocess
import sys
import threading
from typing import Any, Callable, Optional, TypeVar

from vedforge.core.errors import VedforgeError

T = TypeVar("T")

_lock = threading.Lock()
_worker: Optional[subprocess.Popen] = None


def transformers_has_torch() -> bool:
    """Whether transformers, in this process, has (or will have, once imported) its PyTorch classes."""
    from vedforge.core.frameworks import FALSE_VALUES

    if "transformers" in sys.modules:
        from transformers.utils import is_torch_available

        return bool(is_torch_available())
    if os.environ.get("USE_TORCH", "").lower() in FALSE_VALUES:
        return False
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _run(target: str, kwargs: dict[str, Any]) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def call(target: str, **kwargs: Any) -> Any:
    """``target(**kwargs)``: here when transformers has its PyTorch classes here, else in the worker.

    Raises:
        VedforgeError: the function's own refusal (the same class), or the worker failing.
    """
    if transformers_has_torch():
        return _run(target, kwargs)
    with _lock:
        worker = _start()
        assert worker.stdin is not None and worker.stdout is not None
        try:
            worker.stdin.write(json.dumps({"target": target, "kwargs": kwargs}) + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            _stop()
            raise VedforgeError(
                f"The process vedforge starts to read transformers' PyTorch classes ended while deriving {target} "
                "(out of memory, or a broken PyTorch install). Run `python -c \"import torch, transformers\"` to check "
                "the install, or rerun with VEDFORGE_DEBUG=1.")
    reply = json.loads(line)
    if "error" in reply:
        raise _rebuilt(reply["error"])
    return reply["result"]


def derived_from_classes(kind: str, inputs: dict[str, Any], here: Callable[[], T], target: str, *,
                         encode: Callable[[T], Any], decode: Callable[[Any], T], **extra: Any) -> T:
    """A derivation from transformers' PyTorch classes, kept per ``inputs``
    (:func:`vedforge.core.derived_cache.derived`, kind ``kind``): ``here()`` where transformers has
    those classes in this process, else ``target(**inputs, **extra)`` in the worker, which returns
    the result already encoded (``extra`` only words refusals, so it is not part of the key).
    """
    from vedforge.core.derived_cache import derived

    def compute() -> T:
        if transformers_has_torch():
            return here()
        return decode(call(target, **inputs, **extra))

    return derived(kind, 1, inputs, compute, encode=encode, decode=decode)


def _rebuilt(error: dict[str, str]) -> BaseException:
    try:
        cls = getattr(importlib.import_module(error["module"]), error["name"])
    except (ImportError, AttributeError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, VedforgeError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, error["message"])
        return exc
    if error["module"] == "builtins" and isinstance(cls, type) and issubclass(cls, Exception):
        return cls(error["message"])  # a ValueError from transformers stays one, for the caller to word
    return VedforgeError(f"{error['name']}: {error['message']}")


def _start() -> subprocess.Popen:
    global _worker
    if _worker is None or _worker.poll() is not None:
        env = {k: v for k, v in os.environ.items() if k != "USE_TORCH"}
        env["USE_FLAX"] = "0"  # the worker builds PyTorch models only: jax stays out of it too
        _worker = subprocess.Popen([sys.executable, "-m", "vedforge.core.torch_worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, env=env)
        atexit.register(_stop)
    return _worker


def _stop() -> None:
    global _worker
    if _worker is not None:
        try:
            if _worker.stdin:
                _worker.stdin.close()
            _worker.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            _worker.kill()
        _worker = None


def _serve() -> None:
    """The worker's loop: one JSON request per line on stdin, one JSON reply per line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints goes to stderr, not into the replies
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"result": _run(request["target"], request["kwargs"])}
        except Exception as exc:  # noqa: BLE001 (raised again by the caller: call() rebuilds its class)
            reply = {"error": {"module": type(exc).__module__, "name": type(exc).__name__, "message": str(exc)}}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
