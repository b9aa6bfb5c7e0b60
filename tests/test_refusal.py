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


def test_older_processing_objects_without_comment_method():
    p = SimpleNamespace(is_api=False, n_iter=1, comments={})
    assert end_without_pictures(p, "sentence")
    assert p.comments == {"sentence": 1} and p.n_iter == 0
    bare = SimpleNamespace(n_iter=1)
    assert not end_without_pictures(bare, "sentence") and bare.n_iter == 1
