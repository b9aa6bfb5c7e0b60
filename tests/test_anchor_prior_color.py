"""Clean first frame, Frame Similarity Prior and colour match."""
import numpy as np
import pytest
import torch

from i2v_adapter.anchor import clean_denoised, clean_model_input, unet_input_scale
from i2v_adapter.color import match_colors, match_video_colors
from i2v_adapter.layout import first_frame_rows
from i2v_adapter.prior import frame_similarity_prior, gaussian_blur


def test_kdiffusion_input_makes_the_unet_see_z0():
    torch.manual_seed(0)
    z0 = torch.randn(1, 4, 8, 8)
    x = torch.randn(16, 4, 8, 8) * 14.6
    sigma = torch.full((16,), 14.6)
    sigma[8:] = 3.0  # rows may carry different sigmas
    rows = first_frame_rows(16, 8, 0)
    cleaned = clean_model_input(x, z0, rows, sigma)
    unet_input = cleaned * unet_input_scale(sigma)[:, None, None, None]
    for row in rows:
        assert torch.allclose(unet_input[row], z0[0], atol=1e-6)
    others = [r for r in range(16) if r not in rows]
    assert torch.equal(cleaned[others], x[others])
    assert not torch.equal(cleaned[rows], x[rows])


def test_timestep_input_is_z0_and_original_untouched():
    z0 = torch.randn(4, 8, 8)
    x = torch.randn(8, 4, 8, 8)
    original = x.clone()
    cleaned = clean_model_input(x, z0, [2, 6])
    assert torch.equal(cleaned[2], z0) and torch.equal(cleaned[6], z0)
    assert torch.equal(x, original)


def test_clean_denoised_sets_frame_zero():
    z0 = torch.randn(1, 4, 8, 8)
    denoised = torch.randn(8, 4, 8, 8)
    result = clean_denoised(denoised, z0)
    assert torch.equal(result[0], z0[0])
    assert torch.equal(result[1:], denoised[1:])


def test_prior_mask_rate_is_p_and_frame_zero_is_untouched():
    torch.manual_seed(0)
    z0 = torch.randn(4, 64, 64)
    for p in (0.3, 0.5, 0.9):
        latents = frame_similarity_prior(z0, 32, p=p, generator=torch.Generator().manual_seed(1))
        assert latents.shape == (32, 4, 64, 64)
        assert torch.equal(latents[0], z0)
        sharp = (latents[1:] == z0).float().mean().item()
        assert abs(sharp - p) < 0.01, (p, sharp)
        blurred = gaussian_blur(z0[None])[0]
        is_blurred = latents[1:] == blurred
        assert torch.all(is_blurred | (latents[1:] == z0))


def test_prior_is_seeded_and_frames_differ():
    z0 = torch.randn(4, 16, 16)
    a = frame_similarity_prior(z0, 4, generator=torch.Generator().manual_seed(5))
    b = frame_similarity_prior(z0, 4, generator=torch.Generator().manual_seed(5))
    c = frame_similarity_prior(z0, 4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[1], a[2])


def test_gaussian_blur_matches_direct_convolution():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 12)
    sigma, size = 2.0, 5
    offsets = torch.arange(size) - size // 2
    g = torch.exp(-(offsets.double() ** 2) / (2 * sigma ** 2))
    kernel2d = torch.outer(g, g) / torch.outer(g, g).sum()
    padded = torch.nn.functional.pad(x.double(), (2, 2, 2, 2), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel2d.expand(2, 1, size, size), groups=2)
    assert torch.allclose(gaussian_blur(x, size, sigma).double(), expected, atol=1e-5)
    # a constant image stays constant, even on a latent smaller than the kernel
    flat = torch.ones(1, 4, 3, 3)
    assert torch.allclose(gaussian_blur(flat, 9, 18.0), flat)


def test_prior_rejects_bad_parameters():
    with pytest.raises(ValueError):
        frame_similarity_prior(torch.zeros(4, 8, 8), 4, p=1.5)
    with pytest.raises(ValueError):
        gaussian_blur(torch.zeros(1, 4, 8, 8), 4, 1.0)


def test_colour_match_pulls_chroma_to_the_reference_and_keeps_lightness():
    import cv2

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    tinted = np.clip(reference.astype(int) + [40, -20, 0], 0, 255).astype(np.uint8)
    matched = match_colors(tinted, reference)
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB).astype(float)
    ref_ab, tinted_ab, matched_ab = (lab(im)[..., 1:].mean((0, 1)) for im in (reference, tinted, matched))
    assert np.abs(matched_ab - ref_ab).max() < np.abs(tinted_ab - ref_ab).max() / 4
    # lightness survives up to the rounding of the colour conversion
    assert np.abs(lab(matched)[..., 0] - lab(tinted)[..., 0]).mean() < 3
    video = match_video_colors([reference, tinted, tinted])
    assert video[0] is reference and np.array_equal(video[1], video[2])
