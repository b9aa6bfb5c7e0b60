"""Prompt travel: a prompt whose numbered lines say what the video shows from which frame on.

    a photo of a garden, spring        <- head: goes before every keyframe's text
    0: a cat sitting                   <- keyframes: "frame: text", frames rising line by line
    8: a cat jumping
    masterpiece                        <- tail: goes after every keyframe's text

Keyframe k's prompt is "head, text, tail" (empty parts left out). Each keyframe frame is conditioned on its
own prompt; a frame between two keyframes on the spherical interpolation (slerp) of their conditionings, at
t = (frame - previous) / (next - previous), each frame's whole conditioning tensor taken as one vector (a
straight mix where the two are almost parallel). Frames before the first keyframe take the first one's,
frames after the last the last one's; in a closed loop they travel from the last keyframe back to the first,
distances counted round the video. These are sd-webui-animatediff's rules, so its prompts work unchanged; a
numbered line written another way, or one out of place, is refused instead of silently becoming text.
The negative prompt is not travelled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_KEYFRAME = re.compile(r"^\s*(\d+):\s+(\S.*?)\s*$")
_LOOKS_NUMBERED = re.compile(r"^\s*\d+\s*:")
# Below this angle a slerp is numerically a straight mix: take the mix.
_PARALLEL = 0.9995


class PromptTravelError(ValueError):
    """A prompt-travel line that cannot be read; the message is one sentence for the user."""


@dataclass(frozen=True)
class PromptTravel:
    head: str
    keyframes: tuple[tuple[int, str], ...]
    tail: str

    @classmethod
    def parse(cls, prompt: str, frames: int) -> "PromptTravel | None":
        """The travel in ``prompt``, None when it has no keyframe lines; PromptTravelError when one is wrong."""
        lines = prompt.strip().split("\n")
        numbered = [i for i, line in enumerate(lines) if _KEYFRAME.match(line)]
        if not numbered:
            return None
        first, last = numbered[0], numbered[-1]
        keyframes: list[tuple[int, str]] = []
        for line in lines[first:last + 1]:
            match = _KEYFRAME.match(line)
            if match is None:
                what = ("is written another way: write 'frame: text', a space after the colon"
                        if _LOOKS_NUMBERED.match(line) else "stands between numbered lines: keep them together")
                raise PromptTravelError(f"I2V-Adapter: the prompt-travel line {line.strip()!r} {what}.")
            frame, text = int(match[1]), match[2]
            if frame >= frames:
                raise PromptTravelError(f"I2V-Adapter: the prompt-travel line {line.strip()!r} names frame {frame}, "
                                        f"but the video has {frames} frames (0 to {frames - 1}).")
            if keyframes and frame <= keyframes[-1][0]:
                raise PromptTravelError(f"I2V-Adapter: the prompt-travel line {line.strip()!r} comes after frame "
                                        f"{keyframes[-1][0]}: the frames must rise line by line.")
            keyframes.append((frame, text))
        for line in lines[:first] + lines[last + 1:]:
            if _LOOKS_NUMBERED.match(line):
                raise PromptTravelError(f"I2V-Adapter: the prompt-travel line {line.strip()!r} is written another "
                                        f"way: write 'frame: text', a space after the colon.")
        return cls(_joined(lines[:first]), tuple(keyframes), _joined(lines[last + 1:]))

    def keyframe_prompt(self, text: str) -> str:
        return ", ".join(part for part in (self.head, text, self.tail) if part)

    def frame_prompts(self, frames: int) -> list[str]:
        """One prompt per frame: the last keyframe's at or before it (the first keyframe's before that)."""
        prompts = []
        for frame in range(frames):
            text = next((text for key, text in reversed(self.keyframes) if key <= frame), self.keyframes[0][1])
            prompts.append(self.keyframe_prompt(text))
        return prompts

    @property
    def frames(self) -> list[int]:
        return [frame for frame, _ in self.keyframes]


def _joined(lines: list[str]) -> str:
    return ", ".join(line.strip().strip(",").strip() for line in lines if line.strip().strip(","))


def neighbours(frame: int, keyframes: list[int], frames: int, loop: bool) -> tuple[int, int, float]:
    """(previous keyframe, next keyframe, t) for ``frame``; t = 0 on a keyframe."""
    before = [key for key in keyframes if key <= frame]
    after = [key for key in keyframes if key > frame]
    if before and before[-1] == frame:
        return frame, frame, 0.0
    if loop and len(keyframes) > 1:
        previous = before[-1] if before else keyframes[-1]
        following = after[0] if after else keyframes[0]
    else:
        previous = before[-1] if before else keyframes[0]
        following = after[0] if after else keyframes[-1]
        if not before or not after:
            return previous, previous, 0.0
    since = (frame - previous) % frames
    until = (following - frame) % frames
    return previous, following, since / (since + until)


def slerp(start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors taken as single vectors (their norms interpolate with them)."""
    a, b = start.double().flatten(), end.double().flatten()
    cosine = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    if cosine.abs() > _PARALLEL:
        mixed = (1 - t) * a + t * b
    else:
        angle = torch.arccos(cosine)
        mixed = (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / torch.sin(angle)
    return mixed.view(start.shape).to(start.dtype)


def travelled_conditioning(cond: torch.Tensor, keyframes: list[int], loop: bool = False) -> torch.Tensor:
    """``cond`` (one row per frame, keyframe rows conditioned on their prompts) with every other row replaced
    by the interpolation of its neighbouring keyframes' rows."""
    frames = cond.shape[0]
    rows = []
    for frame in range(frames):
        previous, following, t = neighbours(frame, keyframes, frames, loop)
        rows.append(cond[previous] if previous == following or t == 0 else slerp(cond[previous], cond[following], t))
    return torch.stack(rows)
