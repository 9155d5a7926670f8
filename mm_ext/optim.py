"""``NoBiasDecayOptimWrapperConstructor``: MMEngine's optimizer built on ``plugins.tricks.no_bias_decay``.

Registry contract (OPTIM_WRAPPER_CONSTRUCTORS, key ``NoBiasDecayOptimWrapperConstructor``): selected with
``optim_wrapper=dict(constructor='NoBiasDecayOptimWrapperConstructor', optimizer=dict(...), ...)``; called
with the model, returns the configured optim wrapper. The grouping rule is documented in
:func:`plugins.tricks.no_bias_decay.no_bias_decay_param_groups`.
"""

from __future__ import annotations

import inspect

from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from plugins.tricks.no_bias_decay import describe_param_groups, no_bias_decay_param_groups


class NoBiasDecayOptimWrapperConstructor:
    """Build the optimizer with two param groups: decay (conv/linear weights) and no decay (biases, norms).

    Every key of ``optim_wrapper.optimizer`` (``type``, ``lr``, ``momentum``, ``nesterov``, ...) is passed
    to the optimizer unchanged; ``weight_decay`` is applied to the decay group only (when the config leaves
    it out, the optimizer's own default is used). The other keys of ``optim_wrapper`` (``type``, default
    ``'OptimWrapper'``, ``clip_grad``, ``accumulative_counts``...) build the wrapper as MMEngine does. Both
    groups start at the same lr, so the Runner's ``auto_scale_lr`` (which multiplies every group's lr by
    ``world_size * batch_size / base_batch_size``) scales them exactly as MMEngine's default constructor.

    Args:
        optim_wrapper_cfg: the ``optim_wrapper`` config without ``constructor`` and ``paramwise_cfg``;
            must hold ``optimizer``.
        paramwise_cfg: must be None or empty: per-parameter rules would undo the two groups (use MMEngine's
            ``DefaultOptimWrapperConstructor`` for them). Default None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict) or not isinstance(optim_wrapper_cfg.get("optimizer"), dict):
            raise ValueError(
                f"optim_wrapper must be a dict with an 'optimizer' dict, got {optim_wrapper_cfg!r}"
            )
        if paramwise_cfg:
            raise ValueError(
                f"optim_wrapper.paramwise_cfg={dict(paramwise_cfg)!r} is not accepted by "
                "NoBiasDecayOptimWrapperConstructor (accepted: None or {}); use "
                "'DefaultOptimWrapperConstructor' for per-parameter rules"
            )
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop("optimizer"))
        if "type" not in self.optimizer_cfg:
            raise ValueError(f"optim_wrapper.optimizer needs a 'type', got {self.optimizer_cfg!r}")

    def _optimizer_class(self) -> type:
        kind = self.optimizer_cfg["type"]
        if inspect.isclass(kind):
            return kind
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            cls = registry.get(kind)
        if cls is None:
            raise ValueError(f"optim_wrapper.optimizer.type={kind!r} is not a registered optimizer")
        return cls

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Return the optim wrapper for ``model`` (a DDP-style wrapper is unwrapped via ``.module``)."""
        if hasattr(model, "module"):
            model = model.module
        optimizer_cls = self._optimizer_class()
        signature = inspect.signature(optimizer_cls).parameters
        weight_decay = self.optimizer_cfg.get("weight_decay")
        if weight_decay is None:
            if "weight_decay" not in signature:
                raise ValueError(
                    f"optimizer {optimizer_cls.__name__} has no weight_decay argument: "
                    "NoBiasDecayOptimWrapperConstructor has nothing to split"
                )
            weight_decay = signature["weight_decay"].default
        groups = no_bias_decay_param_groups(model, weight_decay)
        print_log(f"no-bias-decay param groups:\n{describe_param_groups(groups)}", logger="current")
        optimizer_cfg = dict(self.optimizer_cfg)
        # Like MMEngine's default constructor: the parameters go to the optimizer's first argument.
        optimizer_cfg[next(iter(signature))] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
