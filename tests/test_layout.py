"""Frame layout and the per-step reference bank."""
import torch

from i2v_adapter.hooks import FirstFrameHooks
from i2v_adapter.layout import FrameLayout, Window, first_frame_rows

import models


def test_window_from_frames():
    assert Window.from_frames(range(16)) == Window(16, 0)
    assert Window.from_frames([28, 29, 30, 31, 0, 1, 2, 3]) == Window(8, 4)
    assert Window.from_frames([4, 5, 6, 7]) == Window(4, None)


def test_first_frame_rows_and_chunk_count():
    assert first_frame_rows(32, 16, 0) == [0, 16]
    assert first_frame_rows(16, 8, 3) == [3, 11]
    layout = FrameLayout(8)
    assert layout.chunk_count(16) == 2
    assert layout.chunk_count(8) == 1
    assert layout.chunk_count(12) is None


def test_bank_serves_windows_without_frame_zero_as_if_it_were_present():
    # The ldm UNet without motion modules treats rows independently, except for our branch;
    # so frames 4..7 computed in a window without frame 0 (reading the bank) must equal
    # the same frames computed in one call together with frame 0.
    unet = models.ldm_unet()
    weights = models.random_adapter(unet)
    torch.manual_seed(11)
    video = torch.randn(8, 4, 8, 8)  # one chunk, frames 0..7
    context = torch.randn(1, 7, models.CONTEXT_DIM)
    t = torch.full((16,), 400.0)

    def run(frames, layout):
        # two chunks (cond, uncond) of the given frames
        rows = list(frames) * 2
        x = video[rows]
        ctx = context.expand(len(rows), -1, -1)
        layout.set_window(Window.from_frames(frames))
        return unet(x, t[: len(rows)], ctx)

    with torch.no_grad():
        together_layout = FrameLayout(5, 0)
        with FirstFrameHooks(unet, together_layout, weights):
            together = run([0, 4, 5, 6, 7], together_layout)

        windows_layout = FrameLayout(4, 0, keep_reference=True)
        with FirstFrameHooks(unet, windows_layout, weights):
            windows_layout.begin_step(0)
            run([0, 1, 2, 3], windows_layout)
            assert len(windows_layout.bank) == 16
            windowed = run([4, 5, 6, 7], windows_layout)

        without_bank = FrameLayout(4, None)
        with FirstFrameHooks(unet, without_bank, weights):
            unreferenced = run([4, 5, 6, 7], without_bank)

    expected = torch.cat([together[1:5], together[6:10]])
    assert torch.allclose(windowed, expected, atol=1e-5), (windowed - expected).abs().max()
    assert windows_layout.stats["banked"] == 16
    assert without_bank.stats["unreferenced"] == 16
    assert not torch.allclose(unreferenced, expected, atol=1e-4)


def test_bank_is_cleared_when_the_step_changes():
    unet = models.ldm_unet()
    layout = FrameLayout(4, 0, keep_reference=True)
    x, t, context = models.ldm_inputs(frames=4)
    with torch.no_grad(), FirstFrameHooks(unet, layout, models.random_adapter(unet)):
        layout.begin_step(0)
        unet(x, t, context)
        assert len(layout.bank) == 16
        layout.begin_step(0)
        assert len(layout.bank) == 16
        layout.begin_step(1)
        assert len(layout.bank) == 0
        layout.set_window(Window(4, None))
        unet(x, t, context)
    assert layout.stats["unreferenced"] == 16


def test_bank_is_not_filled_for_single_window_videos():
    unet = models.ldm_unet()
    layout = FrameLayout(4, 0)
    x, t, context = models.ldm_inputs(frames=4)
    with torch.no_grad(), FirstFrameHooks(unet, layout, models.random_adapter(unet)):
        unet(x, t, context)
    assert len(layout.bank) == 0
    assert layout.stats["anchored"] == 16
