"""plugins.runtime.random_state: every stream survives a weights_only checkpoint and continues where it was captured."""

import random

import numpy as np
import pytest
import torch

from plugins.runtime.random_state import capture_random_state, restore_random_state


def _draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.random())


def test_streams_continue_after_a_weights_only_round_trip(tmp_path):
    np.random.randn()  # a cached Gaussian in numpy's legacy state must survive too
    torch.save({"random_state": capture_random_state()}, tmp_path / "state.pth")
    expected = _draws()
    _draws()  # move every stream on
    restore_random_state(torch.load(tmp_path / "state.pth", weights_only=True)["random_state"])
    assert _draws() == expected


def test_selected_streams_only():
    state = capture_random_state(("torch",))
    assert set(state) == {"torch"}
    expected_torch = torch.rand(2)
    np.random.rand(5)
    numpy_position = np.random.get_state()[2]
    restore_random_state(state)
    assert np.random.get_state()[2] == numpy_position, "numpy was not captured, so it is left as it is"
    torch.testing.assert_close(torch.rand(2), expected_torch, rtol=0, atol=0, msg="torch stream restored")
    with pytest.raises(ValueError, match=r"streams \['dice'\] are not known; accepted"):
        capture_random_state(("torch", "dice"))
