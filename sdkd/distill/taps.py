"""Feature taps: named intermediate outputs of any ``nn.Module``, by module path (DESIGN.md section 8).

A feature name is either a name the model itself returns from ``forward(x, return_features=True)``
(the built-in sdkd models' fast path, e.g. ``"enc"`` or ``"block3.low"``) or the dotted path of a
submodule, as listed by ``model.named_modules()`` (e.g. ``"encoder.2"``, ``"body.mix"``): that
module's output is caught by a forward hook, as torchdistill does. So a model from another library,
whose ``forward(x)`` returns only the prediction, can be a teacher or a student with feature KD.

Rules: the model's own feature dictionary wins over a module path of the same name; a hooked module
that returns a tuple or list gives its first element; a module called several times in one forward
gives its last call's output; hooks live only for the one forward call (nothing is left on the
model). A hooked output is the module's own tensor: a later in-place op in the model (e.g.
``ReLU(inplace=True)``) changes it, so tap the in-place op itself or the module after it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["check_feature_names", "forward_with_features", "has_feature_fast_path", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose paths feature names refer to: through ``DistributedDataParallel``,
    ``DataParallel`` and ``torch.compile`` wrappers (their paths gain a ``module.`` / ``_orig_mod.`` prefix)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def has_feature_fast_path(model: nn.Module) -> bool:
    """True when ``model.forward`` takes a ``return_features`` argument (the built-in models do)."""
    try:
        params = inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented forward
        return False
    return "return_features" in params


def _resolve(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _no_such_feature(model: nn.Module, names: Sequence[str], who: str, returned: Sequence[str] = ()) -> KeyError:
    """One-line ``KeyError``: what is missing, the closest known names, and where the names come from."""
    paths = [n for n, _ in unwrap(model).named_modules() if n]
    known = [*returned, *paths]
    hints = []
    for n in names:
        close = difflib.get_close_matches(n, known, n=3, cutoff=0.6)
        if close:
            hints.append(f"{n!r}: did you mean {', '.join(map(repr, close))}?")
    shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
    where = f"names it returns: {sorted(returned)}; " if returned else ""
    hint = (" " + " ".join(hints)) if hints else ""
    return KeyError(
        f"features: {who} has no feature(s) {list(names)} ({type(unwrap(model)).__name__});{hint} "
        f"{where}module paths (model.named_modules()): {shown or '(none)'}"
    )


def check_feature_names(model: nn.Module, names: Sequence[str], who: str) -> None:
    """Fail early (``KeyError`` with close matches) when a model without the fast path has no module
    at a requested path. With the fast path the names it returns are known only after a forward, so
    those are checked by :func:`forward_with_features`."""
    if not names or has_feature_fast_path(model):
        return
    inner = unwrap(model)
    missing = [n for n in names if _resolve(inner, n) is None]
    if missing:
        raise _no_such_feature(model, missing, who)


def _first_tensor(out: Any, name: str, who: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"features: {who}'s module {name!r} returns {type(out).__name__}, not a tensor; tap one of its submodules"
        )
    return out


def _prediction(out: Any, who: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out:  # a model that returns (pred, extras) unasked
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{who} must return a tensor prediction, got {type(out).__name__}")
    return out


def forward_with_features(
    model: nn.Module, x: torch.Tensor, names: Sequence[str], who: str = "the model"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model(x)`` and the features ``names``: ``(prediction, {name: tensor})``.

    Uses ``model(x, return_features=True)`` when the model has it (names it returns are taken from
    there) and forward hooks on the submodules at the other names. ``who`` names the model in errors
    (``"the student"``, ``"teachers[0]"``). Raises ``KeyError`` listing close matches for a name that
    is neither.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return _prediction(model(x), who), {}
    inner = unwrap(model)
    fast = has_feature_fast_path(model)
    modules = {n: m for n in names if (m := _resolve(inner, n)) is not None}
    if not fast and len(modules) < len(names):
        raise _no_such_feature(model, [n for n in names if n not in modules], who)
    caught: dict[str, Any] = {}
    handles = []
    try:
        for n, m in modules.items():
            handles.append(m.register_forward_hook(lambda _m, _i, out, n=n: caught.__setitem__(n, out)))
        out = model(x, return_features=True) if fast else model(x)
    finally:
        for h in handles:
            h.remove()
    returned: dict[str, torch.Tensor] = {}
    if fast:
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], dict)):
            raise TypeError(f"{who}(x, return_features=True) must return (prediction, {{name: feature}})")
        out, returned = out
    feats = {}
    for n in names:
        if n in returned:
            feats[n] = returned[n]
        elif n in caught:
            feats[n] = _first_tensor(caught[n], n, who)
        elif n not in modules:
            raise _no_such_feature(model, [m for m in names if m not in returned and m not in modules], who, returned)
        else:
            raise RuntimeError(f"features: {who}'s module {n!r} was not called during forward, so it has no output")
    return _prediction(out, who), feats
