"""--precision and --threads: the one helper commands pass their flags to."""

import pytest
import torch

from rsitr.errors import UserError
from rsitr.models.precision import inference_precision
from rsitr.runtime import set_threads


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_precision_sets_the_matmul_dtype(precision, dtype):
    weight, x = torch.randn(4, 4), torch.randn(2, 4)
    with inference_precision(precision, "cpu"):
        assert (x @ weight).dtype == dtype
    assert weight.dtype == torch.float32  # weights are left as they are


def test_bad_precision_and_threads_are_user_errors():
    with pytest.raises(UserError, match="unknown precision"):
        inference_precision("int8", "cpu")
    with pytest.raises(UserError, match="at least 1"):
        set_threads(0)
    before = torch.get_num_threads()
    set_threads(1)
    assert torch.get_num_threads() == 1
    set_threads(before)
