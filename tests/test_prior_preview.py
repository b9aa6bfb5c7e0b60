"""The prior preview: seeded, faithful to the image at p = 1 without blur, noised as the schedule says."""
import numpy as np
import pytest
import torch
from PIL import Image

from i2v_adapter.prior import frame_similarity_prior, gaussian_blur
from i2v_adapter.prior_preview import (animatediff_alphas_cumprod, noise_to_t0, preview_from_latent, preview_prior,
                                       prior_latents, t0_timestep, thumbnail)

ALPHAS = animatediff_alphas_cumprod()


def pixel_encode(image: Image.Image) -> torch.Tensor:
    """A stand-in VAE whose latent is the picture itself: decode(encode(x)) == x."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def pixel_decode(latents: torch.Tensor) -> torch.Tensor:
    return latents


def random_picture(size=(48, 32), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_settings_give_the_same_pixels_and_another_seed_does_not():
    image = random_picture()
    first = preview_prior(image, pixel_encode, pixel_decode, 0.8, 0.5, 6.0, 7, ALPHAS)
    again = preview_prior(image, pixel_encode, pixel_decode, 0.8, 0.5, 6.0, 7, ALPHAS)
    other = preview_prior(image, pixel_encode, pixel_decode, 0.8, 0.5, 6.0, 8, ALPHAS)
    assert np.array_equal(pixels(first.prior), pixels(again.prior))
    assert np.array_equal(pixels(first.noised), pixels(again.noised))
    assert not np.array_equal(pixels(first.prior), pixels(other.prior))
    assert not np.array_equal(pixels(first.noised), pixels(other.noised))


def test_p_one_without_blur_shows_the_image_itself():
    image = random_picture()
    preview = preview_prior(image, pixel_encode, pixel_decode, 1.0, 1.0, 0.0, 3, ALPHAS)
    assert preview.prior.size == image.size
    assert np.array_equal(pixels(preview.prior), pixels(image))
    # At t0 = 1 almost nothing of the image is left: the second picture is mostly noise.
    assert np.abs(pixels(preview.noised) - pixels(image)).mean() > 40


def test_p_one_without_blur_is_decode_of_encode_with_a_real_vae():
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    torch.manual_seed(0)
    config = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                  num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    encoder, decoder = Encoder(**config).eval(), Decoder(**config).eval()

    def encode(img):
        return encoder(pixel_encode(img)).chunk(2, dim=1)[0]

    image = random_picture((32, 32))
    preview = preview_prior(image, encode, decoder, 0.5, 1.0, 0.0, 11, ALPHAS)
    with torch.no_grad():
        expected = thumbnail(decoder(encode(image))[0])
    assert np.array_equal(pixels(preview.prior), pixels(expected))
    assert not np.array_equal(pixels(preview.prior), pixels(image))  # a random VAE does not round-trip


def test_t0_noise_level_matches_diffusers_add_noise():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear")
    assert torch.allclose(scheduler.alphas_cumprod.double(), ALPHAS.double(), atol=1e-6)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t0, timestep in ((1.0, 999), (0.7, 699), (0.5, 499), (0.05, 49)):
        assert t0_timestep(t0, 1000) == timestep
        prior, noised = prior_latents(z0, t0, 0.5, 18.0, 5, ALPHAS)
        # The noise is the generator's next draw after the mask.
        generator = torch.Generator().manual_seed(5)
        expected_prior = frame_similarity_prior(z0, 2, 0.5, 18.0, generator=generator)[1:]
        noise = torch.randn(expected_prior.shape, generator=generator)
        reference = scheduler.add_noise(expected_prior, noise, torch.tensor([timestep]))
        assert torch.equal(prior, expected_prior)
        assert torch.allclose(noised, reference, atol=1e-5)


def test_prior_is_frame_one_of_a_generation_with_the_same_seed():
    z0 = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    prior, _ = prior_latents(z0, 1.0, 0.5, 18.0, 1234, ALPHAS)
    video = frame_similarity_prior(z0, 16, 0.5, 18.0, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(prior[0], video[1])


def test_p_zero_is_the_blurred_latent_and_the_caption_names_the_level():
    z0 = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    prior, _ = prior_latents(z0, 0.7, 0.0, 4.0, 0, ALPHAS)
    assert torch.allclose(prior, gaussian_blur(z0, sigma=4.0))
    preview = preview_from_latent(z0, pixel_decode, 0.7, 0.0, 4.0, 0, ALPHAS, side=8)
    assert max(preview.prior.size) == 8 and max(preview.noised.size) == 8
    assert preview.timestep == 699
    assert preview.signal_share == pytest.approx(float(ALPHAS[699]) ** 0.5)
    assert "timestep 699" in preview.caption()


def test_noise_formula_and_bad_t0():
    latent, noise = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    alpha = float(ALPHAS[999])
    assert torch.allclose(noise_to_t0(latent, noise, 1.0, ALPHAS), torch.full_like(latent, alpha ** 0.5))
    with pytest.raises(ValueError):
        t0_timestep(0.0, 1000)
