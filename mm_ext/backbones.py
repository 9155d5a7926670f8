"""``TimmTransferBackbone``: a timm ResNet (``tricks_*`` or timm's own) as an MMDetection/MMSegmentation backbone.

Registry contract (MODELS, key ``TimmTransferBackbone``): ``forward(images)`` returns a tuple of feature maps,
one per ``out_indices`` entry, as mmdet necks and mmseg decode heads expect. The model and the checkpoint
loading are ``plugins.models.features.TimmFeatures`` (contract in docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from plugins.models.features import TimmFeatures

# Arguments of mmdet's/mmseg's/mmcv's ResNet that a backbone dict merged into a stock one still carries.
_MM_RESNET_KEYS = frozenset({
    "depth", "num_stages", "strides", "dilations", "style", "norm_cfg", "conv_cfg", "deep_stem", "avg_down",
    "stem_channels", "base_channels", "with_cp", "zero_init_residual", "dcn", "stage_with_dcn", "plugins",
    "contract_dilation", "multi_grid",
})  # fmt: skip
_PRETRAINED_FIX = (
    "set model.pretrained=None (mmseg's EncoderDecoder passes it to the backbone) and "
    "model.backbone.checkpoint='.../backbone.pth' (a timm_ext export: python -m timm_ext.train ... "
    "--export-backbone PATH)"
)


def _checkpoint_from_pretrained(pretrained: object, checkpoint: str | None) -> str | None:
    """The rule for an inherited ``model.pretrained``: only a local file means something to this backbone."""
    if pretrained is None or pretrained is False:
        return checkpoint
    if isinstance(pretrained, str | os.PathLike) and os.path.isfile(pretrained):
        if checkpoint is not None:
            raise ValueError(
                f"TimmTransferBackbone got both model.pretrained={os.fspath(pretrained)!r} and "
                f"model.backbone.checkpoint={checkpoint!r}; accepted: one of them (set model.pretrained=None)"
            )
        return os.fspath(pretrained)
    if isinstance(pretrained, str) and "://" not in pretrained:
        what = "no such file"
    else:
        what = "weights of another network that are not fetched or loaded here"
    raise ValueError(
        f"TimmTransferBackbone got model.pretrained={pretrained!r} ({what}); accepted: None, False or the "
        f"path of a timm_ext backbone.pth; {_PRETRAINED_FIX}"
    )


class TimmTransferBackbone(BaseModule):
    """Backbone that transfers a classification network trained by ``timm_ext`` into a detector or segmenter.

    The weights come from a ``backbone.pth`` exported by ``timm_ext.train`` (loaded with
    ``plugins.runtime.checkpoint.load_backbone``, which raises unless every backbone tensor matched); the load report
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
        pretrained: what MMSegmentation's ``EncoderDecoder`` hands the backbone from ``model.pretrained``
            (every stock mmseg model config sets one, e.g. ``'open-mmlab://resnet50_v1c'``). None or False
            (default): nothing. The path of a local file: loaded as ``checkpoint`` is (giving both is an error).
            Anything else (a URL, an ``open-mmlab://``/``torchvision://`` name, True) names weights of another
            network that cannot be fetched or loaded here, and raises a ``ValueError`` saying what to set.
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
        pretrained: str | bool | None = None,
        **timm_kwargs,
    ) -> None:
        merged = sorted(set(timm_kwargs) & _MM_RESNET_KEYS)
        if merged:
            raise ValueError(
                f"TimmTransferBackbone got model.backbone keys of OpenMMLab's ResNet ({', '.join(merged)}): the "
                "backbone dict was merged into the stock config's; replace it with "
                "backbone=dict(_delete_=True, type='TimmTransferBackbone', model_name=..., checkpoint=...)"
            )
        if init_cfg is not None:
            raise ValueError(
                f"model.backbone.init_cfg={init_cfg!r} is not accepted by TimmTransferBackbone (accepted: None); "
                "give the exported weights as model.backbone.checkpoint='.../backbone.pth' (a backbone dict "
                "inherited from a stock config is replaced with backbone=dict(_delete_=True, ...))"
            )
        checkpoint = _checkpoint_from_pretrained(pretrained, checkpoint)
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
