"""A1111 (1.8 to 1.10) with sd-webui-animatediff and sd-webui-controlnet: the first-frame branch as forward
hooks on every attn1, and A1111's sampler conventions."""
from __future__ import annotations

import torch

from ..generation import Generation
from .controlnet import EXTENSION


class A1111Generation(Generation):
    controlnet = EXTENSION

    def install_branches(self) -> None:
        self.hooks.install()
        self._undo.append(self.hooks.remove)

    def is_timestep_sampler(self, denoiser) -> bool:
        """DDIM/PLMS/UniPC: inputs are not scaled by sigma and on_cfg_after_cfg sees eps, not x0."""
        from modules.sd_samplers_timesteps import CFGDenoiserTimesteps

        return isinstance(denoiser, CFGDenoiserTimesteps)

    def model_input_first_frame_rows(self, params) -> tuple[list[int], torch.Tensor | None]:
        """A1111 doubles the batch: [cond frames | uncond frames]."""
        rows, frames = len(params.x), self.geometry.frames
        if rows < frames:
            return [], None
        return ([0] if rows == frames else [0, rows - frames]), (None if self.timestep_sampler else params.sigma)
