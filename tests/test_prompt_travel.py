"""Prompt travel: reading the numbered lines, one prompt per frame, and the conditioning between keyframes."""
import math

import pytest
import torch

from i2v_adapter.prompt_travel import PromptTravel, PromptTravelError, neighbours, slerp, travelled_conditioning

PROMPT = "a garden, spring\nsoft light\n0: a cat sitting\n4: a dog running\n12: a bird\nmasterpiece, detailed"


def test_head_keyframes_and_tail_are_read():
    travel = PromptTravel.parse(PROMPT, 16)
    assert travel.head == "a garden, spring, soft light"
    assert travel.keyframes == ((0, "a cat sitting"), (4, "a dog running"), (12, "a bird"))
    assert travel.tail == "masterpiece, detailed"
    assert travel.keyframe_prompt("a bird") == "a garden, spring, soft light, a bird, masterpiece, detailed"


def test_plain_prompts_and_ratios_are_not_travel():
    assert PromptTravel.parse("a cat, 16:9, cinematic", 16) is None
    assert PromptTravel.parse("a cat\nin a hat", 16) is None


def test_each_frame_gets_the_last_keyframe_prompt_at_or_before_it():
    travel = PromptTravel.parse("2: a cat\n5: a dog", 8)
    assert travel.frame_prompts(8) == ["a cat"] * 5 + ["a dog"] * 3  # before the first keyframe: the first one's


@pytest.mark.parametrize("prompt, says", [
    ("0: a cat\n20: a dog", "names frame 20, but the video has 16 frames (0 to 15)"),
    ("0: a cat\n8: a dog\n4: a bird", "comes after frame 8: the frames must rise"),
    ("0: a cat\n0: a dog", "comes after frame 0"),
    ("0: a cat\n4:a dog", "is written another way: write 'frame: text', a space after the colon"),
    ("0: a cat\nwalking\n8: a dog", "stands between numbered lines: keep them together"),
    ("0: a cat\n8: a dog\ntail\n12 : a bird", "is written another way"),
])
def test_malformed_travel_lines_are_one_sentence(prompt, says):
    with pytest.raises(PromptTravelError, match=says.replace("(", r"\(").replace(")", r"\)")) as caught:
        PromptTravel.parse(prompt, 16)
    assert str(caught.value).count(". ") == 0 and str(caught.value).startswith("I2V-Adapter: ")


def _reference_slerp(a, b, t):
    # Written from the rule: the whole tensors as vectors, angle from their normalised dot product.
    a, b = a.double().flatten(), b.double().flatten()
    omega = math.acos(float(torch.dot(a, b) / (a.norm() * b.norm())))
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)


def test_frame_k_is_the_slerp_of_its_keyframes_at_the_documented_t():
    torch.manual_seed(0)
    cond = torch.randn(16, 77, 8)
    out = travelled_conditioning(cond, [0, 4, 12])
    for frame in range(16):
        if frame in (0, 4, 12):
            assert torch.equal(out[frame], cond[frame])
        elif frame < 4:
            expected = _reference_slerp(cond[0], cond[4], frame / 4)
            assert torch.allclose(out[frame].double().flatten(), expected, atol=1e-5)
        elif frame < 12:
            expected = _reference_slerp(cond[4], cond[12], (frame - 4) / 8)
            assert torch.allclose(out[frame].double().flatten(), expected, atol=1e-5)
        else:  # after the last keyframe, not looped: the last keyframe's
            assert torch.equal(out[frame], cond[12])


def test_a_loop_travels_from_the_last_keyframe_back_to_the_first():
    torch.manual_seed(1)
    cond = torch.randn(16, 77, 8)
    out = travelled_conditioning(cond, [2, 8], loop=True)
    assert neighbours(12, [2, 8], 16, True) == (8, 2, 4 / 10)
    assert neighbours(0, [2, 8], 16, True) == (8, 2, 8 / 10)
    assert torch.allclose(out[12].double().flatten(), _reference_slerp(cond[8], cond[2], 0.4), atol=1e-5)
    assert torch.allclose(out[1].double().flatten(), _reference_slerp(cond[8], cond[2], 0.9), atol=1e-5)
    not_looped = travelled_conditioning(cond, [2, 8])
    assert torch.equal(not_looped[0], cond[2]) and torch.equal(not_looped[12], cond[8])


def test_almost_parallel_conditionings_mix_straight():
    a = torch.ones(4, 3)
    b = a * 1.0001
    assert torch.allclose(slerp(a, b, 0.25), 0.75 * a + 0.25 * b)
