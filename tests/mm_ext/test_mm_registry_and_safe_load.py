"""Registration never overwrites; Runner checkpoints load with weights_only=True, and nothing more does."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import pickle

import pytest

pytest.importorskip("mmengine")

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS, Registry

import mm_ext
from mm_ext._registry import register


def test_everything_is_registered_in_the_root_registries():
    assert PARAM_SCHEDULERS.get("WarmupCosineLR") is mm_ext.WarmupCosineLR
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("NoBiasDecayOptimWrapperConstructor") is (
        mm_ext.NoBiasDecayOptimWrapperConstructor
    )
    for cls in (mm_ext.LabelSmoothingCrossEntropyLoss, mm_ext.KnowledgeDistillationLoss, mm_ext.TimmTransferBackbone):
        assert MODELS.get(cls.__name__) is cls


def test_register_never_overwrites_a_foreign_name():
    registry = Registry("toy")

    class WarmupCosineLR:  # someone else's class with our name
        pass

    registry.register_module(module=WarmupCosineLR)
    with pytest.raises(KeyError, match="already registered"):
        register(registry, mm_ext.WarmupCosineLR)
    assert registry.get("WarmupCosineLR") is WarmupCosineLR
    register(PARAM_SCHEDULERS, mm_ext.WarmupCosineLR)  # our own class again (a reload): kept, no error
    assert PARAM_SCHEDULERS.get("WarmupCosineLR") is mm_ext.WarmupCosineLR


def test_message_hub_state_round_trips_with_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    buffer.update(2.0, count=3)
    state = {"message_hub": {"log_scalars": {"train/loss": buffer}, "runtime_info": {"iter": np.int64(3)}}}
    torch.save(state, tmp_path / "ckpt.pth")
    loaded = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    restored = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(restored, HistoryBuffer)
    assert restored.mean() == buffer.mean() and restored.current() == 2.0
    assert loaded["message_hub"]["runtime_info"]["iter"] == 3


class _Reach:
    """Pickles as getattr(owner, name): what a crafted checkpoint would use to reach other attributes."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize("owner, name", [(HistoryBuffer, "__init__"), (np.ndarray, "tofile")])
def test_getattr_is_limited_to_history_buffer_methods(tmp_path, owner, name):
    torch.save({"x": _Reach(owner, name)}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer|getattr"):
        torch.load(tmp_path / "evil.pth", weights_only=True)
