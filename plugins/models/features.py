"""A timm ResNet as a multi-scale feature extractor, shared by the mm_ext and d2_ext backbones.

The contract is in docs/architecture.md: ``TimmFeatures(model_name, checkpoint=None, out_indices=(1, 2, 3, 4),
output_stride=32, frozen_stages=-1, allow_missing=False, **timm_kwargs)`` returns one feature map per
requested timm ``feature_info`` index (0 = stem at stride 2, 1..4 = layer1..layer4 at strides 4, 8, 16, 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from plugins.models import timm_models as _timm_models  # noqa: F401  (registers the tricks_* names)
from plugins.runtime.checkpoint import load_backbone

_STAGES = ("layer1", "layer2", "layer3", "layer4")
_OUTPUT_STRIDES = (8, 16, 32)


class TimmFeatures(nn.Module):
    """Backbone wrapper around a timm ResNet (any ``tricks_*`` name or timm's own ResNets).

    Args:
        model_name: timm model name, e.g. ``"tricks_resnet50d"`` or ``"resnet50d"``; built with
            ``pretrained=False`` and ``num_classes=0`` (no classifier).
        checkpoint: optional path to a ``backbone.pth`` (format in docs/architecture.md), loaded with
            ``plugins.runtime.checkpoint.load_backbone``; ``self.load_report`` holds the report. Default None.
        out_indices: timm ``feature_info`` indices to return, in order; 0 is the stem, 1..4 are layer1..layer4.
            Default (1, 2, 3, 4).
        output_stride: 32 (default), 16 or 8; 16 and 8 dilate the last stages as timm's ``output_stride`` does.
        frozen_stages: passed to :meth:`freeze` after building (default -1, nothing frozen).
        allow_missing: let the checkpoint load succeed although some backbone tensors were not matched
            (the report still lists them). Default False: any unmatched backbone tensor raises.
        **timm_kwargs: forwarded to ``timm.create_model`` (e.g. ``in_chans``, ``zero_gamma``).
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: str | None = None,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        output_stride: int = 32,
        frozen_stages: int = -1,
        allow_missing: bool = False,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        if output_stride not in _OUTPUT_STRIDES:
            raise ValueError(f"output_stride={output_stride!r} is not supported; accepted: {_OUTPUT_STRIDES}")
        out_indices = tuple(out_indices)
        if not out_indices or any(not isinstance(i, int) or not 0 <= i <= 4 for i in out_indices):
            raise ValueError(f"out_indices={out_indices!r} must be a non-empty sequence of ints in 0..4")
        if list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"out_indices={out_indices!r} must be strictly increasing")
        accepted = "accepted: the tricks_resnet* names or timm's ResNet family (resnet50, resnet50d, ...)"
        if not timm.is_model(model_name):  # timm raises a RuntimeError for an unknown name
            raise ValueError(f"model_name={model_name!r} is not a timm model; {accepted}")
        try:
            self.model = timm.create_model(
                model_name, pretrained=False, num_classes=0, output_stride=output_stride, **timm_kwargs
            )
        except TypeError as err:  # a model class without output_stride, or an unknown kwarg
            raise ValueError(f"model_name={model_name!r} with {timm_kwargs}: {err}; {accepted}") from None
        missing = [name for name in ("conv1", "bn1", "act1", "maxpool", *_STAGES) if not hasattr(self.model, name)]
        if missing:
            raise ValueError(f"model_name={model_name!r} is not a timm ResNet (no {', '.join(missing)}); {accepted}")
        self.out_indices = out_indices
        self.out_channels = [int(self.model.feature_info[i]["num_chs"]) for i in out_indices]
        self.out_strides = [int(self.model.feature_info[i]["reduction"]) for i in out_indices]
        self.load_report = None
        if checkpoint is not None:
            self.load_report = load_backbone(self.model, checkpoint, allow_missing=allow_missing)
        self.frozen_stages = -1
        self.freeze(frozen_stages)

    def _stage_modules(self, stage: int) -> list[nn.Module]:
        if stage == 0:
            return [self.model.conv1, self.model.bn1]
        return [getattr(self.model, _STAGES[stage - 1])]

    def freeze(self, frozen_stages: int) -> None:
        """Freeze the stem and the first stages, MMDetection style.

        Args:
            frozen_stages: -1 freezes nothing, 0 the stem, k (1..4) the stem and layer1..layerk. Frozen
                parameters get ``requires_grad=False`` and their BatchNorm layers stay in eval mode, also after
                ``train()``. Freezing only adds: a value below an earlier one unfreezes nothing.
        """
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages={frozen_stages!r} is not accepted; accepted: an int in -1..4")
        self.frozen_stages = max(self.frozen_stages, frozen_stages)
        for stage in range(self.frozen_stages + 1):
            for module in self._stage_modules(stage):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> TimmFeatures:
        """Set train/eval mode, keeping the frozen stages in eval mode."""
        super().train(mode)
        if mode:
            for stage in range(self.frozen_stages + 1):
                for module in self._stage_modules(stage):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return one feature map per entry of ``out_indices``, in order."""
        model = self.model
        x = model.act1(model.bn1(model.conv1(x)))
        features = [x] if 0 in self.out_indices else []
        x = model.maxpool(x)
        last = self.out_indices[-1]
        for index, name in enumerate(_STAGES, start=1):
            if index > last:
                break
            x = getattr(model, name)(x)
            if index in self.out_indices:
                features.append(x)
        return features
