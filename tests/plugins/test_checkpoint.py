import os

import pytest
import torch
from torch import nn

from plugins.runtime import checkpoint
from plugins.runtime.checkpoint import (
    BACKBONE_FORMAT,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    export_backbone,
    load_backbone,
    load_checkpoint,
    save_checkpoint,
)


class _Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, classes)


def _seeded_net(seed, classes=10):
    torch.manual_seed(seed)
    net = _Net(classes)
    with torch.no_grad():
        for buffer in net.buffers():
            if buffer.is_floating_point():
                buffer.uniform_()
    return net


def test_round_trip(tmp_path):
    obj = {"model": {"w": torch.arange(3.0)}, "epoch": 4, "meta": {"name": "x", "top1": 0.5, "tags": [1, 2]}}
    path = save_checkpoint(obj, tmp_path / "sub" / "last.pth")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and loaded["meta"] == obj["meta"]
    torch.testing.assert_close(loaded["model"]["w"], obj["model"]["w"], rtol=0, atol=0)
    assert os.listdir(tmp_path / "sub") == ["last.pth"], "no temporary file left behind"


def test_exception_mid_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)  # half the bytes reached the disk...
        raise OSError("disk full")  # ...then the write failed

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2, "big": torch.zeros(1000)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.pth"], "the temporary file is removed"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        load_checkpoint(path)
    assert not marker.exists(), "the payload ran"
    with pytest.raises(UnsafeCheckpointError):
        load_backbone(_Net(), path)
    assert not marker.exists()


def test_truncated_missing_and_foreign_files(tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint({"w": torch.zeros(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="model.pth"):
        load_checkpoint(path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth"):
        load_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_export_then_load_backbone_matches_every_tensor(tmp_path):
    source, target = _seeded_net(0), _seeded_net(1, classes=3)
    meta = {
        "model_name": "net",
        "variant": "d",
        "recipe": {"epochs": 1},
        "val_top1": 0.5,
        "num_classes": 10,
        "in_chans": 3,
    }
    path = export_backbone(source, tmp_path / "backbone.pth", meta)
    stored = load_checkpoint(path)
    assert stored["meta"]["format"] == BACKBONE_FORMAT and stored["meta"]["variant"] == "d"
    assert not any(k.startswith("fc.") for k in stored["state_dict"])

    report = load_backbone(target, path)
    backbone_keys = [k for k in source.state_dict() if not k.startswith("fc.")]
    assert report.ok and sorted(report.matched) == sorted(backbone_keys)
    assert (
        report.summary()
        == f"backbone load: {len(backbone_keys)}/{len(backbone_keys)} tensors matched, 0 missing, 0 unexpected, 0 shape mismatches"
    )
    for key in backbone_keys:
        torch.testing.assert_close(
            target.state_dict()[key], source.state_dict()[key], rtol=0, atol=0, msg=key
        )


def test_renamed_key_is_caught_and_nothing_is_loaded(tmp_path):
    source, target = _seeded_net(0), _seeded_net(1)
    state = {k: v for k, v in source.state_dict().items()}
    state["layer1.0.weight_renamed"] = state.pop("layer1.0.weight")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing \['layer1.0.weight'\]"):
        load_backbone(target, {"state_dict": state, "meta": {"format": BACKBONE_FORMAT}})
    for key, value in target.state_dict().items():
        torch.testing.assert_close(
            value, before[key], rtol=0, atol=0, msg=f"{key} changed although the load failed"
        )

    report = load_backbone(target, state, allow_missing=True)
    assert report.missing == ["layer1.0.weight"] and report.unexpected == ["layer1.0.weight_renamed"]
    assert not report.ok
    with pytest.raises(ValueError, match="unexpected"):
        load_backbone(target, state, allow_missing=True, allow_unexpected=False)
    fixed = load_backbone(target, state, key_map={"layer1.0.weight_renamed": "layer1.0.weight"})
    assert fixed.ok


def test_shape_mismatch_training_checkpoint_and_key_map(tmp_path):
    source = _seeded_net(0)
    wrapped = {"model": {f"backbone.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    path = save_checkpoint(wrapped, tmp_path / "last.pth")
    report = load_backbone(_Net(), path, key_map=lambda k: k.removeprefix("backbone."))
    assert report.ok and report.ignored == ["backbone.fc.weight", "backbone.fc.bias"]

    wide = _Net()
    wide.layer1[0] = nn.Conv2d(4, 4, 5)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone(wide, source.state_dict())
    report = load_backbone(wide, source.state_dict(), allow_missing=True)
    assert report.shape_mismatch == [("layer1.0.weight", (4, 4, 3, 3), (4, 4, 5, 5))]


def test_export_refuses_unsafe_meta(tmp_path):
    with pytest.raises(TypeError, match="meta"):
        export_backbone(_Net(), tmp_path / "b.pth", {"model_name": object()})
    assert not (tmp_path / "b.pth").exists()


def test_foreign_format_is_rejected():
    with pytest.raises(ValueError, match="format"):
        load_backbone(_Net(), {"state_dict": {}, "meta": {"format": "other/v9"}})
    with pytest.raises(ValueError, match="state_dict"):
        load_backbone(_Net(), {"epoch": 3})


def test_module_has_no_unpickling_path():
    source = open(checkpoint.__file__).read()
    assert "weights_only=True" in source and "weights_only=False" not in source
