"""A refused page request ends without sampling and keeps its sentence; an API request gets the HTTP error."""
from types import SimpleNamespace

from i2v_adapter.webui.refusal import end_without_pictures


class Processing(SimpleNamespace):
    """The part of the WebUI's processing object a refusal touches."""

    def comment(self, text):
        self.comments[text] = 1


def test_page_request_runs_no_batch_and_keeps_the_sentence():
    p = Processing(is_api=False, n_iter=3, comments={})
    assert end_without_pictures(p, "I2V-Adapter makes videos with AnimateDiff: enable AnimateDiff.")
    assert p.n_iter == 0
    assert list(p.comments) == ["I2V-Adapter makes videos with AnimateDiff: enable AnimateDiff."]


def test_api_request_is_left_to_the_http_error():
    p = Processing(is_api=True, n_iter=3, comments={})
    assert not end_without_pictures(p, "I2V-Adapter needs an image.")
    assert p.n_iter == 3 and p.comments == {}


def _plot_cell(**fields):
    plot = SimpleNamespace(title=lambda: "X/Y/Z plot")
    return Processing(scripts=SimpleNamespace(selectable_scripts=[plot]), script_args=(1, "x"), comments={},
                      n_iter=1, width=96, height=64, **fields)


def test_a_refused_plot_cell_shows_its_sentence_instead_of_failing_the_plot():
    import numpy as np

    from i2v_adapter.webui.refusal import show_in_plot_cell

    cell = _plot_cell(is_api=True)  # even through the API: the rest of the plot is still made
    assert end_without_pictures(cell, "I2V-Adapter: scale must be between 0.0 and 2.0, got 5.0.")
    processed = SimpleNamespace(images=[], infotexts=["a cat\nSteps: 2"])  # the WebUI's text when nothing ran
    show_in_plot_cell(cell, processed, "I2V-Adapter: scale must be between 0.0 and 2.0, got 5.0.")
    picture = np.asarray(processed.images[0])
    assert processed.images[0].size == (96, 64)
    assert processed.infotexts[0] == "I2V-Adapter: scale must be between 0.0 and 2.0, got 5.0."
    assert (picture[..., 0] > picture[..., 1] + 50).any() and (picture == 255).all(axis=-1).mean() > 0.5  # red text
    outside = SimpleNamespace(images=[], infotexts=[])
    show_in_plot_cell(Processing(is_api=False, comments={}), outside, "sentence")
    assert outside.images == []  # a refusal outside a plot stays a sentence


def test_older_processing_objects_without_comment_method():
    p = SimpleNamespace(is_api=False, n_iter=1, comments={})
    assert end_without_pictures(p, "sentence")
    assert p.comments == {"sentence": 1} and p.n_iter == 0
    bare = SimpleNamespace(n_iter=1)
    assert not end_without_pictures(bare, "sentence") and bare.n_iter == 1


def _animatediff_request(batch_size: int, video_length: int):
    """A processing object as AnimateDiff leaves it: its before_process sets the batch to the frame count."""
    script = SimpleNamespace(title=lambda: "AnimateDiff", args_from=0)
    return SimpleNamespace(scripts=SimpleNamespace(alwayson_scripts=[script]), batch_size=batch_size,
                           script_args=[{"enable": True, "video_length": video_length, "batch_size": 16}])


def test_animatediff_that_failed_to_start_is_named_not_the_frame_count():
    import pytest
    from i2v_adapter.webui.generation import check_request
    from i2v_adapter.webui.lifecycle import I2VAdapterError

    with pytest.raises(I2VAdapterError, match="AnimateDiff did not start its 8-frame video") as caught:
        check_request(_animatediff_request(batch_size=1, video_length=8), None)
    assert "at least 2 frames" not in caught.value.detail
    with pytest.raises(I2VAdapterError, match="at least 2 frames"):
        check_request(_animatediff_request(batch_size=1, video_length=1), None)
    assert check_request(_animatediff_request(batch_size=8, video_length=8), None).frames == 8
