"""Shared fixtures of the d2_ext tests: tiny fashion scenes on disk and a timm_ext-format backbone.pth."""

import pytest


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """8 train / 4 val fashion scenes of 96 px (a few seconds to write)."""
    from plugins.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("fashion_scenes")
    generate_scenes(root, train=8, val=4, image_size=96, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def exported_backbone(tmp_path_factory):
    """(model, path): a tricks_resnet26nd written with plugins.runtime.checkpoint.export_backbone, as timm_ext.train does."""
    import timm
    import torch

    import timm_ext  # noqa: F401  registers tricks_* in timm
    from plugins.runtime.checkpoint import export_backbone

    torch.manual_seed(123)
    model = timm.create_model("tricks_resnet26nd", pretrained=False, num_classes=10, in_chans=3)
    with torch.no_grad():  # trained-looking BN statistics, so that a load that skipped them would show
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buffer.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("backbone") / "backbone.pth"
    meta = {"model_name": "tricks_resnet26nd", "variant": "d", "recipe": {}, "val_top1": 0.0, "num_classes": 10,
            "in_chans": 3}
    export_backbone(model, path, meta)
    return model, path
