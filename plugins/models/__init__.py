"""The models every adapter shares: the ``tricks_*`` ResNets registered in timm (``timm_models``) and the
feature extractor over any timm model that the detection and segmentation adapters build their backbones
from (``features``). The adapters import these from here, never from one another.
"""
