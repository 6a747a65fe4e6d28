"""Models named by import path: ``"package.module:Class"`` with keyword arguments, for any ``nn.Module``.

A config's ``model.name`` (and a teacher's ``model.name`` in ``distill.teachers``) is either a
registry name (``unet``, ``st_alternet``...) or the import path of an ``nn.Module`` subclass from an
installed package, e.g. ``openstl.models:SimVP_Model``; its ``cfg`` is then passed as keyword
arguments, unchanged (sdkd does not add the data's shapes: a foreign class has its own arguments).
Only ``nn.Module`` subclasses are instantiated, so a config or checkpoint cannot make sdkd call an
arbitrary function; importing the module runs that package's import-time code, as ``import`` does.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["build_imported", "check_imported_config", "import_model_class", "is_import_path"]


def is_import_path(name: str) -> bool:
    """True for ``"package.module:Class"`` (registry names have no colon)."""
    return ":" in str(name)


def import_model_class(path: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass at ``"package.module:Class"`` (``Class`` may be dotted: ``Outer.Inner``).

    Raises ``ValueError`` with one line naming the fix when the path is malformed, the module does not
    import, the attribute is missing (with close matches) or is not an ``nn.Module`` subclass.
    """
    module_name, _, attr = str(path).partition(":")
    if not module_name or not attr:
        raise ValueError(f"model {path!r}: an import path is 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"model {path!r}: cannot import {module_name!r} ({exc}); install its package or fix the path"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"model {path!r}: {module_name!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"model {path!r}: {attr!r} is a {type(obj).__name__}, not an nn.Module subclass")
    return obj


def check_imported_config(path: str, cfg: Mapping[str, Any]) -> None:
    """Import the class and check that ``cfg`` binds to its constructor (unknown or missing
    arguments raise ``TypeError``), without building it."""
    cls = import_model_class(path)
    try:
        inspect.signature(cls).bind(**{str(k): v for k, v in cfg.items()})
    except TypeError as exc:
        raise TypeError(f"model {path!r}: {exc} (cfg holds its keyword arguments)") from None
    except ValueError:  # no introspectable signature: checked when built
        pass


def build_imported(path: str, cfg: Mapping[str, Any]) -> nn.Module:
    """``Class(**cfg)`` for the import path ``path``."""
    check_imported_config(path, cfg)
    return import_model_class(path)(**{str(k): v for k, v in cfg.items()})
