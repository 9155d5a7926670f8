"""NonFiniteLossHook stops with plugins' NonFiniteLossError (mm_ext re-exports the one class)."""

from types import SimpleNamespace

import pytest

pytest.importorskip("mmengine")

import torch  # noqa: E402

import mm_ext  # noqa: E402
from mm_ext.hooks import NonFiniteLossHook  # noqa: E402
from plugins.runtime.errors import NonFiniteLossError  # noqa: E402


def _runner(iteration: int, last_ckpt: str | None):
    hub = SimpleNamespace(get_info=lambda key: {"last_ckpt": last_ckpt}.get(key))
    return SimpleNamespace(iter=iteration, message_hub=hub)


def test_a_non_finite_loss_stops_naming_the_iteration_and_the_checkpoint_kept():
    assert mm_ext.NonFiniteLossError is NonFiniteLossError
    hook = NonFiniteLossHook()
    hook.after_train_iter(_runner(0, None), 0, outputs={"loss": torch.tensor(2.0)})
    hook.after_train_iter(_runner(0, None), 0, outputs={})  # a step that returned no loss: nothing to check
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at iteration 5 \(loss=nan\): training stopped "
                                                 r"before this iteration's checkpoint; the last checkpoint, "
                                                 r"w/iter_4\.pth, keeps the last good state\. Lower "
                                                 r"optim_wrapper\.optimizer\.lr or check the data\.$"):
        hook.after_train_iter(_runner(4, "w/iter_4.pth"), 0, outputs={"loss": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 \(loss=inf\).*no checkpoint was written"):
        hook.after_train_iter(_runner(0, None), 0, outputs={"loss": float("inf")})
