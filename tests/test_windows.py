"""Context windows as AnimateDiff makes them: frame-0 windows first, the layout told each window."""
import sys
import types

import pytest

from i2v_adapter.layout import FrameLayout, Window, frame_zero_windows_first


def animatediff_windows(step, video_length, batch_size, stride=1, overlap=4, loop="R-P"):
    """A re-statement of AnimateDiff's uniform scheduler for the cases the tests need."""
    if video_length <= batch_size:
        return [list(range(batch_size))]

    def ordered_halving(val):
        bin_str = f"{val:064b}"
        return int(bin_str[::-1], 2) / (1 << 64)

    windows = []
    for context_step in [1 << s for s in range(stride)]:
        pad = int(round(video_length * ordered_halving(step)))
        for j in range(int(ordered_halving(step) * context_step) + pad, video_length + pad - overlap,
                       batch_size * context_step - overlap):
            windows.append([e % video_length for e in range(j, j + batch_size * context_step, context_step)])
    return windows


@pytest.mark.parametrize("video_length,context,stride", [(16, 8, 1), (32, 16, 1), (64, 16, 1), (32, 8, 2), (64, 16, 3)])
def test_every_pass_starts_with_a_frame_zero_window(video_length, context, stride):
    for step in range(6):
        windows = animatediff_windows(step, video_length, context, stride)
        ordered = frame_zero_windows_first(windows)
        assert sorted(map(tuple, ordered)) == sorted(map(tuple, windows))  # same windows, only reordered
        assert 0 in ordered[0]
        first_without = next((i for i, w in enumerate(ordered) if 0 not in w), len(ordered))
        assert all(0 in w for w in ordered[:first_without]) and all(0 not in w for w in ordered[first_without:])
        # relative order of the windows without frame 0 is kept
        assert [w for w in ordered if 0 not in w] == [w for w in windows if 0 not in w]


def test_wrapped_and_dilated_windows_locate_frame_zero():
    assert Window.from_frames([12, 13, 14, 15, 0, 1, 2, 3]) == Window(8, 4)
    assert Window.from_frames([14, 15, 0, 1, 2, 3, 4, 5]) == Window(8, 2)
    assert Window.from_frames(list(range(1, 32, 2))) == Window(16, None)
    assert Window.from_frames(list(range(0, 32, 2))) == Window(16, 0)


def test_scheduler_wrapper_reorders_and_sets_the_layout(monkeypatch):
    from i2v_adapter.webui import animatediff

    class AnimateDiffInfV2V:
        @staticmethod
        def uniform(step, video_length=0, batch_size=16, stride=1, overlap=4, loop_setting="R-P"):
            yield from animatediff_windows(step, video_length, batch_size, stride, overlap, loop_setting)

    module = types.ModuleType(animatediff.SCHEDULER_MODULE)
    module.AnimateDiffInfV2V = AnimateDiffInfV2V
    monkeypatch.setitem(sys.modules, animatediff.SCHEDULER_MODULE, module)
    original = AnimateDiffInfV2V.__dict__["uniform"]

    layout = FrameLayout(8, 0, keep_reference=True)
    restore = animatediff.wrap_window_scheduler(layout)
    seen = []
    for window in AnimateDiffInfV2V.uniform(1, 16, 8, 1, 2, "R-P"):
        seen.append((window, layout.window))
    assert 0 in seen[0][0]
    assert all(w == Window.from_frames(frames) for frames, w in seen)
    assert [frames for frames, _ in seen] == frame_zero_windows_first(animatediff_windows(1, 16, 8, 1, 2))

    restore()
    assert AnimateDiffInfV2V.__dict__["uniform"] is original

    # a wrapper left behind (e.g. by a failed run) is found and undone by the sweep
    animatediff.wrap_window_scheduler(layout)
    animatediff.wrap_window_scheduler(layout)
    animatediff.restore_stale_scheduler()
    assert AnimateDiffInfV2V.__dict__["uniform"] is original
