"""Context windows, the linear beta schedule and the frame limit of the host-independent motion core."""
import pytest
import torch

from i2v_adapter.motion import FrameLimitError, animatediff_alphas_cumprod, animatediff_sigmas, context_windows
from i2v_adapter.motion.windows import LOOP, LOOP_EVERY_STRIDE, LOOP_WITH_PROMPTS
from i2v_adapter.motion.architecture import TemporalSelfAttention


@pytest.mark.parametrize("frames,length,overlap", [(16, 16, 4), (17, 16, 4), (32, 16, 4), (64, 16, 8), (10, 4, 1),
                                                   (33, 24, 0), (5, 2, 1), (2, 1, 0)])
def test_windows_cover_every_frame_with_frame_zero_first(frames, length, overlap):
    windows = context_windows(frames, length, overlap)
    assert sorted({f for window in windows for f in window}) == list(range(frames))
    assert 0 in windows[0] and all(0 not in window for window in windows[1:])
    assert all(len(window) == min(length, frames) for window in windows)
    assert all(window == list(range(window[0], window[0] + len(window))) for window in windows)
    by_start = sorted(windows)
    for before, after in zip(by_start, by_start[1:]):
        shared = len(set(before) & set(after))
        # neighbours share exactly `overlap` frames, except the last one pulled back to end on the last frame
        assert shared == overlap or (after[-1] == frames - 1 and shared > overlap)


def test_one_window_when_the_video_fits():
    assert context_windows(16, 16, 4) == [list(range(16))]
    assert context_windows(8, 24, 4) == [list(range(8))]
    assert context_windows(4, None, 0) == [[0, 1, 2, 3]]


def test_sixty_four_frames_in_windows_of_sixteen():
    windows = context_windows(64, 16, 4)
    assert [w[0] for w in windows] == [0, 12, 24, 36, 48]


@pytest.mark.parametrize("frames,length,overlap,says", [(8, 4, 4, "overlap must be from 0 to 3"),
                                                        (8, 4, -1, "overlap"), (0, 4, 1, "at least one frame"),
                                                        (8, 0, 0, "at least 1")])
def test_bad_window_settings_are_refused(frames, length, overlap, says):
    with pytest.raises(ValueError, match=says):
        context_windows(frames, length, overlap)


def _neighbours_on_the_circle(frames: int, windows) -> set[tuple[int, int]]:
    """Pairs of frames (i, i+1 mod frames) that sit next to each other inside some window."""
    return {(window[k], window[k + 1]) for window in windows for k in range(len(window) - 1)}


@pytest.mark.parametrize("mode", [LOOP, LOOP_WITH_PROMPTS, LOOP_EVERY_STRIDE])
@pytest.mark.parametrize("frames,length,overlap", [(24, 16, 4), (28, 16, 4), (32, 16, 4), (64, 16, 8), (10, 4, 1),
                                                   (16, 16, 4), (8, 24, 4), (33, 24, 0)])
def test_loop_windows_cover_every_frame_and_wrap_round(mode, frames, length, overlap):
    windows = context_windows(frames, length, overlap, mode)
    assert sorted({f for window in windows for f in window}) == list(range(frames))
    assert all(len(window) == min(length, frames) for window in windows)
    # every window is a run of consecutive frames on the circle, and the seam (last -> 0) is inside one
    assert all(window[k + 1] == (window[k] + 1) % frames for window in windows for k in range(len(window) - 1))
    neighbours = _neighbours_on_the_circle(frames, windows)
    assert (frames - 1, 0) in neighbours
    if overlap:  # with shared frames, every pair of neighbouring frames is seen together
        assert neighbours >= {(i, (i + 1) % frames) for i in range(frames)}
    assert 0 in windows[0]
    if length < frames:
        seam = [window for window in windows if 0 in window and window.index(0) > 0]
        # the wrapping window reaches `overlap` frames into frame 0's window (more with every stride)
        assert max(len(window) - window.index(0) for window in seam) >= overlap


def test_loop_window_starts():
    assert [w[0] for w in sorted(context_windows(28, 16, 4, LOOP))] == [0, 12, 24]
    assert [24, 25, 26, 27] + list(range(12)) in context_windows(28, 16, 4, LOOP)
    assert sorted(w[0] for w in context_windows(24, 16, 4, LOOP)) == [0, 12]
    assert sorted(w[0] for w in context_windows(24, 8, 4, LOOP_EVERY_STRIDE)) == [0, 4, 8, 12, 16, 20]
    assert sorted(w[0] for w in context_windows(24, 8, 4, LOOP)) == [0, 4, 8, 12, 16, 20]
    # a video that fits one window gets a second one rolled by half, seam in its middle
    assert context_windows(8, 16, 4, LOOP) == [list(range(8)), [4, 5, 6, 7, 0, 1, 2, 3]]


def test_unknown_loop_mode_is_refused():
    with pytest.raises(ValueError, match="unknown closed-loop mode 'R-P'"):
        context_windows(16, 8, 2, "R-P")


def test_schedule_equals_diffusers_linear_betas():
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="linear").alphas_cumprod
    ours = animatediff_alphas_cumprod()
    assert ours.shape == (1000,) and ours.dtype == torch.float32
    assert (ours - reference).abs().max() < 1e-6
    scaled = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert (ours - scaled).abs().max() > 1e-2  # not SD's own schedule
    sigmas = animatediff_sigmas()
    assert torch.allclose(sigmas.double(), ((1 - ours.double()) / ours.double()).sqrt(), rtol=1e-4)
    assert 25.0 < sigmas[-1] < 25.3 and sigmas[0] < 0.03


def test_animatediff_sdxl_schedule_equals_diffusers_scaled_linear_betas():
    from diffusers import DDPMScheduler

    from i2v_adapter.motion.schedule import ANIMATEDIFF_SDXL_BETAS

    reference = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.020).alphas_cumprod
    assert (animatediff_alphas_cumprod(ANIMATEDIFF_SDXL_BETAS) - reference).abs().max() < 1e-6


def test_the_preview_takes_the_schedule_of_the_loaded_model():
    from types import SimpleNamespace

    from i2v_adapter.motion.schedule import ANIMATEDIFF_BETAS, ANIMATEDIFF_SDXL_BETAS
    from i2v_adapter.webui.preview import motion_schedule

    assert motion_schedule(SimpleNamespace(is_sdxl=True)) == ANIMATEDIFF_SDXL_BETAS
    assert motion_schedule(SimpleNamespace(is_sdxl=False)) == ANIMATEDIFF_BETAS
    assert motion_schedule(SimpleNamespace()) == ANIMATEDIFF_BETAS


def test_more_frames_than_the_position_table_is_a_sentence_not_a_silent_slice():
    attention = TemporalSelfAttention(16, heads=2, max_frames=24)
    assert attention(torch.randn(3, 24, 16)).shape == (3, 24, 16)
    with pytest.raises(FrameLimitError, match="at most 24 frames in one window, got 25"):
        attention(torch.randn(3, 25, 16))
