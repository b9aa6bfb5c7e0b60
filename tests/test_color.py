"""Colour match: quantile matching that never leaves the reference's range (library and own path agree)."""
import cv2
import numpy as np
import pytest

from i2v_adapter import color


@pytest.fixture(params=["library", "own"])
def matcher(request, monkeypatch):
    if request.param == "own":
        monkeypatch.setattr(color, "_library_match", None)
    elif color._library_match is None:
        pytest.skip("scikit-image is not installed")
    return color._match_channel


def test_disjoint_ranges_map_onto_the_reference_range(matcher):
    rng = np.random.default_rng(1)
    source = rng.integers(100, 111, (40, 40), dtype=np.uint8)
    reference = rng.integers(150, 161, (40, 40), dtype=np.uint8)
    matched = matcher(source, reference)
    assert matched.min() == 150 and matched.max() == 160
    # order is kept: a higher source value never maps lower
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(matched.ravel()[order].astype(int)) >= 0)


def test_the_source_maximum_maps_to_the_reference_maximum_not_255(matcher):
    rng = np.random.default_rng(2)
    source = rng.integers(110, 151, (64, 64), dtype=np.uint8)
    source.ravel()[:69] = 159  # the reddest pixels of a frame
    reference = rng.integers(100, 150, (64, 64), dtype=np.uint8)
    matched = matcher(source, reference)
    assert np.all(matched.ravel()[:69] == 149)
    assert matched.max() == 149 and matched.min() >= 100


def test_one_extreme_pixel(matcher):
    source = np.full((16, 16), 128, dtype=np.uint8)
    source[0, 0] = 250
    reference = np.arange(256, dtype=np.uint8)[96:160].repeat(4).reshape(16, 16)
    matched = matcher(source, reference)
    assert matched[0, 0] == 159
    assert 96 <= matched.min() and matched.max() <= 159


def test_constant_channels(matcher):
    rng = np.random.default_rng(3)
    varied = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    assert np.all(matcher(varied, np.full((16, 16), 131, dtype=np.uint8)) == 131)
    from_constant = matcher(np.full((16, 16), 7, dtype=np.uint8), varied)
    assert len(np.unique(from_constant)) == 1 and varied.min() <= from_constant[0, 0] <= varied.max()


def test_own_matching_equals_the_library():
    if color._library_match is None:
        pytest.skip("scikit-image is not installed")
    rng = np.random.default_rng(4)
    for _ in range(5):
        source = rng.integers(0, 256, (33, 17), dtype=np.uint8)
        reference = np.clip(rng.normal(128, 20, (20, 20)), 0, 255).astype(np.uint8)
        assert np.allclose(color.quantile_match(source, reference), color._library_match(source, reference))


def test_matched_frames_stay_within_the_reference_chroma_range():
    rng = np.random.default_rng(5)
    reference = np.clip(rng.normal((120, 110, 100), 15, (48, 48, 3)), 0, 255).astype(np.uint8)
    frame = np.clip(rng.normal((160, 90, 60), 40, (48, 48, 3)), 0, 255).astype(np.uint8)
    frame[:3, :3] = (255, 0, 0)  # saturated specks
    lab = lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(int)
    reference_lab, matched_lab = lab(reference), lab(color.match_colors(frame, reference))
    for channel in (1, 2):
        low, high = reference_lab[..., channel].min(), reference_lab[..., channel].max()
        assert matched_lab[..., channel].min() >= low - 2 and matched_lab[..., channel].max() <= high + 2
