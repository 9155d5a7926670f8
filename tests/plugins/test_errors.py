"""plugins.runtime.errors: the one NaN / infinite loss check of every adapter (one process; the agreement
across processes is in test_distributed.py)."""

import math

import pytest
import torch

from plugins.runtime.errors import NonFiniteLossError, check_finite


@pytest.mark.parametrize("losses", [[], [0.5, 2.0], [torch.tensor(0.5), torch.tensor(1e30)],
                                    [torch.tensor(3.0, requires_grad=True)]])
def test_finite_losses_pass(losses):
    check_finite(losses, 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_error_names_the_first_non_finite_update_and_its_value(bad):
    losses = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(bad), torch.tensor(math.nan)]
    with pytest.raises(NonFiniteLossError, match=rf"^non-finite loss at update 12 \(loss={bad}\): training stopped$"):
        check_finite(losses, 10)
    with pytest.raises(NonFiniteLossError, match=rf"^non-finite loss at iteration 3 \(loss={bad}\): stopped; try"):
        check_finite([1.0, 2.0, bad], unit="iteration", advice="stopped; try a lower lr")


def test_half_precision_and_grad_carrying_losses_are_checked():
    loss = (torch.tensor(60000.0, dtype=torch.float16, requires_grad=True) * 2)  # overflows to inf in fp16
    with pytest.raises(NonFiniteLossError, match=r"update 1 \(loss=inf\)"):
        check_finite([loss])
    assert issubclass(NonFiniteLossError, RuntimeError), "callers that catch RuntimeError still stop"
