import numpy as np
import pytest

mask_utils = pytest.importorskip("pycocotools.mask")

from plugins.data._coco import mask_to_xywh, rle_encode  # noqa: E402


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), dtype=bool)
    yield np.ones((6, 3), dtype=bool)
    corner = np.zeros((300, 200), dtype=bool)
    corner[120:, 33:] = True  # long runs: multi-group counts and negative differences
    yield corner
    for _ in range(60):
        h, w = rng.integers(1, 80, size=2)
        yield rng.random((h, w)) < rng.random()


def test_rle_encode_matches_pycocotools():
    for n, mask in enumerate(_masks()):
        ours = rle_encode(mask)
        ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours == {"size": [int(v) for v in ref["size"]], "counts": ref["counts"].decode()}, f"mask {n}"
        np.testing.assert_array_equal(mask_utils.decode(ours), mask, err_msg=f"mask {n} round trip")
        if mask.any():
            assert mask_to_xywh(mask) == mask_utils.toBbox(ref).tolist(), f"mask {n} box"


def test_empty_mask_has_no_box():
    with pytest.raises(ValueError, match="empty"):
        mask_to_xywh(np.zeros((3, 3), dtype=bool))
