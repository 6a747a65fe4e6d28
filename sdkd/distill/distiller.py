"""``Distiller``: one object that turns a batch into the distillation loss (DESIGN.md section 6).

It wraps a student, one or more frozen teachers (or a :class:`TeacherCache` of their outputs),
the task loss and the KD loss(es), and returns the total loss plus every term (detached) for
logging. Strategies: ``single`` (eq. 11), ``aver``, ``a2d`` (eqs. 12-15) and ``camkd``.

Typical loop::

    distiller = Distiller(student, [t1, t2], strategy="a2d", lam=1.0)
    for x, y in loader:
        opt.zero_grad()
        out = distiller(x, y)
        distiller.backward(out)      # == out.loss.backward(), except for grad_space="params"
        opt.step()

``grad_space="params"`` (literal eq. 13) computes the M per-teacher parameter gradients during
the forward call (M backward passes), solves the weights and keeps ``sum_m alpha_m grad_m``;
:meth:`Distiller.backward` then adds it to ``.grad`` without another backward pass. Its
``out.loss`` is still ``sum_m alpha_m l_m`` with alpha constant, whose ordinary backward gives
the same gradient (one extra pass), so plain ``out.loss.backward()`` is correct too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..ops._device_checks import assert_on_device
from .cache import PRED, TeacherCache, as_teacher_list, run_teacher
from .strategies import a2d_output_weights, a2d_solve, camkd_weights, check_strategy, gram, per_sample_loss
from .taps import check_feature_names, forward_with_features

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# {student feature: teacher tap}; a tap is a teacher feature name or {band: name} (per-band branch taps)
FeatureMap = Union[None, Mapping[str, Any], Sequence[Mapping[str, Any]]]
TeacherOutputs = Union[torch.Tensor, Sequence[Union[torch.Tensor, Mapping[str, torch.Tensor]]]]


@dataclass
class DistillOutput:
    """Result of :meth:`Distiller.forward`.

    ``loss``: the total loss (0-dim, differentiable); ``terms``: detached 0-dim tensors
    (``task``, ``kd/m``, ``feat/m``, ``weight/m``, ``kkt_residual``...); ``weights``: the
    teacher weights, ``(M,)`` or per sample ``(B, M)`` (detached); ``pred``: the student
    prediction (detached). ``grads`` is set for ``grad_space="params"``: the combined gradient
    per trainable parameter, applied by :meth:`Distiller.backward`.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: torch.Tensor
    pred: torch.Tensor
    grads: list[torch.Tensor | None] | None = None
    params: list[nn.Parameter] = field(default_factory=list, repr=False)
    applied: bool = field(default=False, repr=False)

    @property
    def grads_ready(self) -> bool:
        """True when the weighted gradient was already computed (``grad_space="params"``)."""
        return self.grads is not None

    def log(self) -> dict[str, float]:
        """The terms as Python floats (one host sync)."""
        keys = ["loss", *self.terms]
        vals = torch.stack([self.loss.detach().float(), *(v.float() for v in self.terms.values())]).tolist()
        return dict(zip(keys, vals))


def _default_kd_loss() -> nn.Module:
    try:
        from sdkd.losses import SpectralKD

        return SpectralKD()
    except ImportError:  # the functional op is the same loss
        return _SpectralKDFunctional()


class _SpectralKDFunctional(nn.Module):
    """SpectralKD with default settings over :func:`sdkd.ops.spectral_loss`."""

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from sdkd.ops import spectral_loss

        return spectral_loss(s, t)


def _same_shape_mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if s.shape != t.shape:
        raise ValueError(
            f"feature_loss: default MSE needs equal shapes, got student {tuple(s.shape)} vs teacher {tuple(t.shape)}; "
            "pass feature_loss with an adapter (e.g. sdkd.losses.FeatureMSE)"
        )
    return F.mse_loss(s, t)


class Distiller(nn.Module):
    """Student + frozen teachers + task and KD losses -> total loss for a batch.

    Args:
        student: any ``nn.Module`` mapping ``x (B, T_in, C, H, W)`` to ``(B, T_out, C, H, W)``.
        teachers: one module or a sequence (frozen and kept in eval mode here; run under
            ``no_grad``). May be None when ``cache`` holds their outputs.
        strategy: ``"single"``, ``"aver"``, ``"a2d"`` or ``"camkd"``.
        kd_loss: prediction KD loss ``(student, teacher) -> scalar`` (default ``SpectralKD()``).
        lam: weight of the KD term (lambda in eq. 11/12).
        task_loss: ``(pred, y) -> scalar`` (default ``nn.MSELoss()``).
        features: ``{student_feature: teacher_feature}`` for every teacher, or one mapping per
            teacher. A feature is a name the model returns from ``forward(x, return_features=True)``
            (the built-in models) or the path of a submodule (``model.named_modules()``), whose output
            a forward hook catches (:mod:`sdkd.distill.taps`); adds ``feature_lam * feature_loss(fs, ft)`` to each teacher's KD term. A teacher
            side may be ``{band: teacher_feature}`` (e.g. ``{"low": "block0.low", "high": "block0.high"}``);
            the loss then receives ``{band: tensor}`` (:class:`sdkd.losses.BranchSpectralKD`).
        feature_loss: one loss for all pairs, a mapping ``{student_feature: loss}``, or one of
            those per teacher. ``nn.Module`` losses (adapters) are registered and trained.
        C: A2D cap, ``0 <= alpha_m <= C`` (``C * M >= 1`` required).
        grad_space: A2D gradients w.r.t. the student's outputs (``"output"``, default) or its
            parameters (``"params"``, eq. 13 literally).
        per_sample: A2D output space only: one QP per sample instead of per batch.
        cache: a :class:`TeacherCache`; ``forward(x, y, index=idx)`` reads teachers from it.
        check_finite: assert that every loss term (and the a2d weights) is finite, on the device (no
            host read per step): on the CPU a ``FloatingPointError`` naming the term, on CUDA a
            device-side assert.
    """

    def __init__(
        self,
        student: nn.Module,
        teachers: nn.Module | Sequence[nn.Module] | None = None,
        strategy: str = "single",
        kd_loss: LossFn | None = None,
        lam: float = 1.0,
        task_loss: LossFn | None = None,
        features: FeatureMap = None,
        feature_loss: Any = None,
        feature_lam: float = 1.0,
        C: float = 0.6,
        grad_space: str = "output",
        per_sample: bool = False,
        cache: TeacherCache | None = None,
        check_finite: bool = True,
    ):
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        teacher_list = as_teacher_list(teachers)
        if cache is not None and not isinstance(cache, TeacherCache):
            raise TypeError(f"cache must be a TeacherCache, got {type(cache).__name__}")
        if teacher_list and cache is not None and cache.num_teachers != len(teacher_list):
            raise ValueError(f"cache holds {cache.num_teachers} teacher(s) but {len(teacher_list)} teachers were given")
        M = len(teacher_list) if teacher_list else (cache.num_teachers if cache is not None else 0)
        check_strategy(strategy, M, float(C), grad_space)
        if per_sample and grad_space != "output":
            raise ValueError(
                "per_sample=True needs grad_space='output' (per-sample parameter gradients are not supported)"
            )
        if per_sample and strategy != "a2d":
            raise ValueError(f"per_sample only applies to strategy='a2d', got strategy={strategy!r}")
        for name, v in (("lam", lam), ("feature_lam", feature_lam)):
            if not isinstance(v, (int, float)) or v != v or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")

        self.student = student
        self.teachers = nn.ModuleList(teacher_list)
        for t in self.teachers:
            t.eval()
            t.requires_grad_(False)
        self.num_teachers = M
        self.strategy = strategy
        self.kd_loss = kd_loss if kd_loss is not None else _default_kd_loss()
        self.task_loss = task_loss if task_loss is not None else nn.MSELoss()
        self.lam = float(lam)
        self.feature_lam = float(feature_lam)
        self.C = float(C)
        self.grad_space = grad_space
        self.per_sample = bool(per_sample)
        self.cache = cache
        self.check_finite = bool(check_finite)
        self.feature_pairs = self._feature_pairs(features, M)
        self._feature_losses = self._feature_loss_table(feature_loss, M)
        mods = {id(f): f for row in self._feature_losses for f in row.values() if isinstance(f, nn.Module)}
        self.feature_loss_modules = nn.ModuleList(mods.values())
        self._check_devices()
        check_feature_names(student, sorted({s for pairs in self.feature_pairs for s in pairs}), "the student")
        for m, t in enumerate(self.teachers):
            check_feature_names(t, self.teacher_feature_names(m), f"teachers[{m}]")
        if cache is not None:
            for m in range(M):
                missing = [tn for tn in self.teacher_feature_names(m) if tn not in cache.keys(m)]
                if missing:
                    raise KeyError(
                        f"features: the cache has no feature(s) {missing} for teacher {m}; it holds {cache.keys(m)}"
                    )

    # ------------------------------------------------------------------ configuration helpers
    @staticmethod
    def _feature_pairs(features: FeatureMap, M: int) -> list[dict[str, Any]]:
        if features is None:
            return [{} for _ in range(M)]
        if isinstance(features, Mapping):
            rows = [features] * M
        else:
            rows = list(features)
            if len(rows) != M or not all(isinstance(r, Mapping) for r in rows):
                raise ValueError(f"features: give one {{student: teacher}} mapping, or one mapping per teacher ({M})")
        out = []
        for r in rows:
            for s, tap in r.items():
                if isinstance(tap, Mapping) and not (tap and all(isinstance(n, str) for n in tap.values())):
                    raise ValueError(
                        f"features: {s!r} maps to per-band taps {dict(tap)!r}; give {{band: feature name}}"
                    )
                if not isinstance(tap, (str, Mapping)):
                    raise TypeError(f"features: {s!r} maps to {tap!r}; give a teacher feature name")
            out.append({s: dict(tap) if isinstance(tap, Mapping) else tap for s, tap in r.items()})
        return out

    def teacher_feature_names(self, m: int) -> list[str]:
        """Sorted names of the features that teacher ``m`` must provide (band taps flattened)."""
        return teacher_feature_names(self.feature_pairs[m])

    def _feature_loss_table(self, feature_loss: Any, M: int) -> list[dict[str, LossFn]]:
        def row(spec: Any, m: int) -> dict[str, LossFn]:
            names = self.feature_pairs[m]
            if spec is None:
                return {s: _same_shape_mse for s in names}
            if isinstance(spec, Mapping):
                missing = [s for s in names if s not in spec]
                if missing:
                    raise KeyError(f"feature_loss: no loss for student feature(s) {missing} (teacher {m})")
                return {s: spec[s] for s in names}
            if callable(spec):
                return {s: spec for s in names}
            raise TypeError(f"feature_loss: expected a callable, a mapping or a sequence, got {type(spec).__name__}")

        if isinstance(feature_loss, (list, tuple)):
            if len(feature_loss) != M:
                raise ValueError(f"feature_loss: a sequence needs one entry per teacher ({M}), got {len(feature_loss)}")
            return [row(spec, m) for m, spec in enumerate(feature_loss)]
        return [row(feature_loss, m) for m in range(M)]

    def _check_devices(self) -> None:
        dev = self._student_device()
        for m, t in enumerate(self.teachers):
            for p in list(t.parameters())[:1] + list(t.buffers())[:1]:
                if p.device != dev:
                    raise ValueError(
                        f"teachers[{m}] is on {p.device} but the student is on {dev}; move both (distiller.to(device))"
                    )

    def _student_device(self) -> torch.device:
        for p in self.student.parameters():
            return p.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> Distiller:
        """Set train/eval mode for the student and loss modules; teachers always stay in eval."""
        super().train(mode)
        for t in self.teachers:
            t.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and feature-adapter parameters that require grad (teachers are frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward pieces
    def _student_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        names = sorted({s for pairs in self.feature_pairs for s in pairs})
        return forward_with_features(self.student, x, names, "the student")

    def _teacher_outputs(
        self, x: torch.Tensor, teacher_outputs: TeacherOutputs | None, index: Any
    ) -> list[dict[str, torch.Tensor]]:
        M = self.num_teachers
        if teacher_outputs is not None:
            if isinstance(teacher_outputs, torch.Tensor):
                teacher_outputs = [teacher_outputs]
            outs = [o if isinstance(o, Mapping) else {PRED: o} for o in teacher_outputs]
            if len(outs) != M:
                raise ValueError(f"teacher_outputs: expected {M} teacher output(s), got {len(outs)}")
        elif index is not None:
            if self.cache is None:
                raise ValueError("index: given, but the Distiller has no cache")
            outs = self.cache[index]
            if outs and outs[0][PRED].shape[0] != x.shape[0]:
                raise ValueError(f"index: {outs[0][PRED].shape[0]} indices for a batch of {x.shape[0]} samples")
        elif len(self.teachers):
            outs = [run_teacher(t, x, self.teacher_feature_names(m), m) for m, t in enumerate(self.teachers)]
        else:
            raise ValueError("teacher_outputs or index: no live teachers, so pass cached outputs")
        for m, o in enumerate(outs):
            if PRED not in o:
                raise KeyError(f"teacher_outputs[{m}] has no {PRED!r} entry")
            missing = [tn for tn in self.teacher_feature_names(m) if tn not in o]
            if missing:
                raise KeyError(f"features: teacher {m} outputs have no feature(s) {missing}; available: {sorted(o)}")
        return outs

    @staticmethod
    def _to(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if t.device != ref.device:  # cached outputs live on the host
            t = t.to(ref.device, non_blocking=True)
        if t.dtype != ref.dtype:
            t = t.to(ref.dtype)
        return t.detach()

    def _kd_terms(
        self, pred: torch.Tensor, sfeats: dict[str, torch.Tensor], outs: list[dict[str, torch.Tensor]], per_sample: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-teacher KD (prediction) and feature terms: scalars, or ``(B,)`` when ``per_sample``."""
        kd, feat = [], []
        for m, o in enumerate(outs):
            t = self._to(o[PRED], pred)
            if t.shape != pred.shape:
                raise ValueError(
                    f"teachers[{m}] prediction shape {tuple(t.shape)} != student prediction shape {tuple(pred.shape)}"
                )
            kd.append(per_sample_loss(self.kd_loss, pred, t) if per_sample else self.kd_loss(pred, t))
            fterm = pred.new_zeros(pred.shape[:1] if per_sample else ())
            for s_name, tap in self.feature_pairs[m].items():
                fn = self._feature_losses[m][s_name]
                sf = sfeats[s_name]
                tf = (
                    {b: self._to(o[n], sf) for b, n in tap.items()}
                    if isinstance(tap, Mapping)
                    else self._to(o[tap], sf)
                )
                fterm = fterm + (per_sample_loss(fn, sf, tf) if per_sample else fn(sf, tf))
            feat.append(fterm)
        return kd, feat

    def _raise_if_not_finite(self, named: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
        """Assert on the device that every loss term is finite (no host read per step, DESIGN.md section 2).

        On the CPU a failure raises ``FloatingPointError`` naming the terms and inputs at once; on CUDA it
        is a device-side assert (the Trainer's logged loss would catch it too, naming the step).
        """
        if not self.check_finite:
            return

        def diagnose() -> None:
            bad = [k for k, v in named.items() if not bool(torch.isfinite(v.detach()).all())]
            culprits = [k for k, v in tensors.items() if not bool(torch.isfinite(v.detach()).all())]
            where = f"; non-finite inputs: {culprits}" if culprits else ""
            raise FloatingPointError(f"loss term(s) {bad} are NaN/Inf{where}")

        vals = torch.stack([v.detach().float().reshape(-1).sum() for v in named.values()])
        assert_on_device(
            torch.isfinite(vals), "Distiller: a loss term is NaN/Inf (check_finite=False skips this)", diagnose
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        teacher_outputs: TeacherOutputs | None = None,
        index: Any = None,
    ) -> DistillOutput:
        """Total distillation loss for the batch ``(x, y)``.

        Teacher outputs come from ``teacher_outputs`` (a tensor per teacher or a mapping with
        ``"pred"`` and features), else from the cache at sample ``index``, else from the live
        teachers.
        """
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("x and y must be tensors")
        dev = self._student_device()
        if x.device != dev:
            raise ValueError(f"x is on {x.device} but the student is on {dev}")
        if y.device != dev:
            raise ValueError(f"y is on {y.device} but the student is on {dev}")
        outs = self._teacher_outputs(x, teacher_outputs, index)
        pred, sfeats = self._student_forward(x)
        if pred.shape != y.shape:
            raise ValueError(f"y shape {tuple(y.shape)} != student prediction shape {tuple(pred.shape)}")

        grad_on = torch.is_grad_enabled() and pred.requires_grad
        if self.strategy == "a2d" and not grad_on:
            # Evaluation: alpha still needs d l_m / d outputs, so differentiate w.r.t. detached leaves.
            pred = pred.detach().requires_grad_()
            sfeats = {k: v.detach().requires_grad_() for k, v in sfeats.items()}
        with torch.enable_grad() if self.strategy == "a2d" else nullcontext():
            out = self._combine(pred, sfeats, outs, y, grad_on)
        if not grad_on:
            out.loss = out.loss.detach()
        return out

    def _combine(
        self,
        pred: torch.Tensor,
        sfeats: dict[str, torch.Tensor],
        outs: list[dict[str, torch.Tensor]],
        y: torch.Tensor,
        grad_on: bool,
    ) -> DistillOutput:
        M, lam, fl = self.num_teachers, self.lam, self.feature_lam
        per_sample = self.strategy == "camkd" or self.per_sample
        kd, feat = self._kd_terms(pred, sfeats, outs, per_sample)
        task = per_sample_loss(self.task_loss, pred, y) if per_sample else self.task_loss(pred, y)
        has_feat = any(self.feature_pairs)
        named = {"task": task}
        named.update({f"kd/{m}": kd[m] for m in range(M)})
        if has_feat:
            named.update({f"feat/{m}": feat[m] for m in range(M)})
        inputs = {"student prediction": pred, "y": y}
        inputs.update({f"teachers[{m}] prediction": o[PRED] for m, o in enumerate(outs)})
        self._raise_if_not_finite(named, inputs)
        teacher_terms = torch.stack([k + fl * f for k, f in zip(kd, feat)])  # (M,) or (M, B)
        grads = params = None
        extra: dict[str, torch.Tensor] = {}

        if self.strategy in ("single", "aver"):
            weights = torch.full((M,), 1.0 / M, device=pred.device, dtype=teacher_terms.dtype)
            loss = task + lam * teacher_terms.mean(0)
        elif self.strategy == "camkd":
            with torch.no_grad():
                errors = torch.stack([per_sample_loss(self.task_loss, self._to(o[PRED], pred), y) for o in outs])
                w = camkd_weights(errors.float()).to(teacher_terms.dtype)  # (M, B)
            loss = (task + lam * (w * teacher_terms).sum(0)).mean()
            task = task.mean()
            weights = w.T
        else:  # a2d
            losses = task + lam * teacher_terms  # (M,) or (M, B): l_m = task + lam * KD_m (eq. 12)
            if self.grad_space == "params" and grad_on:
                params = self.trainable_parameters()
                used = [False] * len(params)
                rows = []
                for m in range(M):  # eq. 13 literally: one backward pass per teacher
                    gs = torch.autograd.grad(losses[m], params, retain_graph=True, allow_unused=True)
                    used = [u or g is not None for u, g in zip(used, gs)]
                    rows.append(torch.cat([_flat(g, p) for g, p in zip(gs, params)]))
                flat = torch.stack(rows)  # (M, P)
                del rows
                alpha, resid = a2d_solve(gram(flat)[None], self.C)
                combined = (alpha[0].to(flat.dtype) @ flat).split([p.numel() for p in params])
                grads = [c.view_as(p) if u else None for c, p, u in zip(combined, params, used)]
            else:
                targets = [pred, *sfeats.values()]
                gs = []
                for m in range(M):
                    g = torch.autograd.grad(losses[m].sum(), targets, retain_graph=True, allow_unused=True)
                    gs.append(torch.cat([_flat(gi, t).reshape(t.shape[0], -1) for gi, t in zip(g, targets)], 1))
                alpha, resid = a2d_output_weights(gs, self.C, self.per_sample)
            if self.check_finite:
                assert_on_device(
                    torch.isfinite(alpha), "Distiller: the a2d weights are NaN/Inf (non-finite gradients?)"
                )
            alpha = alpha.to(losses.dtype)
            if self.per_sample:
                loss = (alpha.T * losses).sum(0).mean()
                task = task.mean()
                weights = alpha
            else:
                loss = (alpha[0] * losses).sum()
                weights = alpha[0]
            extra["kkt_residual"] = resid.detach().max()

        terms = {k: (v.detach().mean() if v.dim() else v.detach()) for k, v in named.items()}
        terms["task"] = task.detach()
        w_mean = weights.detach().mean(0) if weights.dim() == 2 else weights.detach()
        terms.update({f"weight/{m}": w_mean[m] for m in range(M)})
        terms.update(extra)
        return DistillOutput(loss, terms, weights.detach(), pred.detach(), grads, params or [])

    # ------------------------------------------------------------------ backward
    def backward(self, out: DistillOutput) -> None:
        """Backpropagate ``out``: ordinary ``out.loss.backward()``, or for ``grad_space="params"``
        add the already computed ``sum_m alpha_m grad_m`` to each parameter's ``.grad``."""
        if not isinstance(out, DistillOutput):
            raise TypeError(f"out must be a DistillOutput, got {type(out).__name__}")
        if out.applied:
            raise RuntimeError("out: already backpropagated; run the Distiller again for a new gradient")
        if out.grads is None:
            if not out.loss.requires_grad:
                raise RuntimeError("out: the loss has no graph (computed under no_grad or eval)")
            out.loss.backward()
        else:
            for p, g in zip(out.params, out.grads):
                if g is not None:
                    p.grad = g.clone() if p.grad is None else p.grad + g
        out.applied = True


def teacher_feature_names(pairs: Mapping[str, Any]) -> list[str]:
    """Sorted teacher feature names read by ``{student: tap}`` pairs (a tap: a name or ``{band: name}``)."""
    names = set()
    for tap in pairs.values():
        names.update(tap.values() if isinstance(tap, Mapping) else (tap,))
    return sorted(names)


def _flat(g: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    return (torch.zeros_like(ref) if g is None else g).reshape(-1)
