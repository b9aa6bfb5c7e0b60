"""A refused generation started from the page: one sentence under the (empty) result, no traceback.

Through the API a refusal is an HTTP 422 with the sentence. From the page, an exception would reach the
WebUI's request wrapper, which prints the whole argument list and a Python traceback to the console for
what is only a user's input mistake. So a page request ends instead without sampling anything: the
generation runs zero batches, every script's postprocess runs as usual (AnimateDiff restores its motion
module), and the sentence is the result's comment, which the page shows under the generation info
(javascript/ marks it as an error).
"""
from __future__ import annotations


def end_without_pictures(p, message: str) -> bool:
    """End a page request quietly with ``message``; False for API requests, which get the HTTP error."""
    if getattr(p, "is_api", False):
        return False
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(message)
    elif isinstance(getattr(p, "comments", None), dict):
        p.comments[message] = 1
    else:
        return False
    p.n_iter = 0  # read by the WebUI's batch loop right after p.init
    return True
