"""Cases every WebUI with sd-webui-animatediff runs the same way (A1111, classic Forge): videos from picture A to
picture B, loops, and one video per picture. A host's test module imports them and provides the fixtures
``server`` (its running WebUI), ``motion_module``, ``image``, ``checkpoint`` and ``outputs`` (its output folder).
"""
import pytest
from webui_requests import (check_a_folder_with_an_unreadable_file, check_a_to_b,
                            check_animatediffs_own_last_frame_gives_way, check_keyframe_refusals, check_loop,
                            check_one_video_per_picture, check_windowed_a_to_b, decoded_first_frame,
                            last_test_image)


@pytest.fixture(scope="module")
def keyframe_references(checkpoint, image):
    return decoded_first_frame(checkpoint, image), decoded_first_frame(checkpoint, last_test_image().resize(image.size))


def test_a_video_from_a_to_b(keyframe_references, server, motion_module, image):
    check_a_to_b(server, motion_module, image, keyframe_references)


def test_a_loop_is_written_with_each_frame_once(server, motion_module, image):
    check_loop(server, motion_module, image)


def test_a_to_b_in_windows_holds_both_anchors(keyframe_references, server, motion_module, image):
    check_windowed_a_to_b(server, motion_module, image, keyframe_references)


def test_bad_keyframe_requests_are_refused(server, motion_module, image):
    check_keyframe_refusals(server, motion_module, image)


def test_animatediffs_own_last_frame_gives_way(keyframe_references, server, motion_module, image):
    check_animatediffs_own_last_frame_gives_way(server, motion_module, image, keyframe_references)


def test_three_pictures_make_three_videos_named_after_them(server, motion_module, image, checkpoint, outputs):
    check_one_video_per_picture(server, motion_module, image, checkpoint, outputs)


def test_a_folder_with_an_unreadable_file_makes_the_others(server, motion_module, image, tmp_path):
    check_a_folder_with_an_unreadable_file(server, motion_module, image, tmp_path)
