"""``TimmTransferBackbone``: a timm ResNet (``tricks_*`` or timm's own) as an MMDetection/MMSegmentation backbone.

Registry contract (MODELS, key ``TimmTransferBackbone``): ``forward(images)`` returns a tuple of feature maps,
one per ``out_indices`` entry, as mmdet necks and mmseg decode heads expect. The model and the checkpoint
loading are ``timm_ext.features.TimmFeatures`` (contract in docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from timm_ext.features import TimmFeatures


class TimmTransferBackbone(BaseModule):
    """Backbone that transfers a classification network trained by ``timm_ext`` into a detector or segmenter.

    The weights come from a ``backbone.pth`` exported by ``timm_ext.train`` (loaded with
    ``plugins.checkpoint.load_backbone``, which raises unless every backbone tensor matched); the load report
    is logged through MMEngine's current logger. Without ``checkpoint`` the network keeps timm's random
    initialisation (a "from scratch" run). ``init_weights``, which the Runner calls before training, keeps
    the weights as they are: nothing is re-drawn after the load.

    Args:
        model_name: timm model name, e.g. ``"tricks_resnet50d"`` or ``"resnet50"``.
        checkpoint: path to a ``backbone.pth``; a missing file raises ``FileNotFoundError``. Default None:
            no transfer (timm's random initialisation, logged as a warning).
        out_indices: timm feature indices (0 stem, 1..4 = layer1..layer4, strides 4..32). Default (1, 2, 3, 4).
        frozen_stages: -1 (default) nothing frozen, 0 the stem, k the stem and layer1..layerk; frozen parts
            keep ``requires_grad=False`` and BatchNorm in eval mode, also after ``train()``.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) in ``train()``. Default False.
        output_stride: 32 (default), 16 or 8, timm's ``output_stride``: 8 dilates layer3 and layer4 (dilations
            2 and 4) as FCN-D8 needs. The narrow small-input ``tricks_resnet*n*`` nets have no stem max-pool, so
            their strides are half of that (``out_strides``; 16 gives them stride 8).
        init_cfg: MMEngine init config; not supported (weights come from timm or ``checkpoint``). Default None.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``in_chans``, or ``zero_gamma`` for tricks_* nets).
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: str | None = None,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        output_stride: int = 32,
        init_cfg: dict | None = None,
        **timm_kwargs,
    ) -> None:
        if init_cfg is not None:
            raise ValueError(
                f"init_cfg={init_cfg!r} is not accepted by TimmTransferBackbone (accepted: None); "
                "give the exported weights as checkpoint='.../backbone.pth'"
            )
        super().__init__()
        if checkpoint is not None and not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"TimmTransferBackbone checkpoint={checkpoint!r} does not exist; export one with "
                "`python -m timm_ext.train ... --export-backbone PATH`, or set checkpoint=None to train from scratch"
            )
        self.features = TimmFeatures(
            model_name,
            checkpoint=checkpoint,
            out_indices=tuple(out_indices),
            output_stride=output_stride,
            frozen_stages=frozen_stages,
            **timm_kwargs,
        )
        self.norm_eval = bool(norm_eval)
        self.out_channels = list(self.features.out_channels)
        self.out_strides = list(self.features.out_strides)
        if checkpoint is None:
            print_log(
                f"TimmTransferBackbone({model_name!r}) has no checkpoint: timm's random initialisation, no "
                "transfer (set model.backbone.checkpoint to a timm_ext backbone.pth)",
                logger="current",
                level=logging.WARNING,
            )
        else:
            print_log(
                f"TimmTransferBackbone({model_name!r}) from {checkpoint}: {self.features.load_report.summary()}",
                logger="current",
            )

    def init_weights(self) -> None:
        """Keep the weights: they come from timm's construction or from ``checkpoint``."""
        self._is_init = True

    def train(self, mode: bool = True) -> TimmTransferBackbone:
        """Set train/eval mode; frozen stages and, with ``norm_eval``, every BatchNorm stay in eval mode."""
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return one feature map per ``out_indices`` entry, as a tuple."""
        return tuple(self.features(x))
