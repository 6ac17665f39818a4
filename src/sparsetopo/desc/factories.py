"""Factories of the user's own, named in a run description as ``package.module:function``."""

from __future__ import annotations

import importlib
import re
from typing import Any

from sparsetopo.errors import ConfigError

FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory(name: str) -> bool:
    """A user's factory, ``package.module:function`` (the registries' names are plain words)."""
    return bool(FACTORY.match(name))


def load_factory(name: str, option: str) -> Any:
    """The callable ``name`` names, imported; refused in one line naming ``option`` (``--model`` ...)."""
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{option} {name}: cannot load the factory ({exc}); it must be importable (on PYTHONPATH) "
                          "as package.module:function") from None
    if not callable(factory):
        raise ConfigError(f"{option} {name}: {attr} is not callable")
    return factory


def registered_or_factory(value: Any, option: str, registered: tuple[str, ...], what: str) -> str:
    """``value`` as a registered name or a factory path; anything else refused naming both."""
    text = str(value).strip()
    if text in registered or is_factory(text):
        return text
    raise ConfigError(f"{option} {value!r}: choose one of {', '.join(registered)}, or give a {what} factory as "
                      "package.module:function")
