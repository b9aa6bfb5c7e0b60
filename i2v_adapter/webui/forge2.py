"""Forge 2 (``backend/``): one I2V generation with this extension's own motion module.

Forge 2 has no AnimateDiff, so the extension is its own: the video settings come from the panel's motion
section (:mod:`forge2_params`), ``p.batch_size`` becomes the frame count before the WebUI lays out its
batches, and each sampling gets a UnetPatcher clone with the first-frame branch (as on classic Forge)
plus the motion module (:mod:`forge2_motion`), windows for long videos (:mod:`forge2_windows`) and
AnimateDiff's noise schedule, which is put back on every path. The video is written in ``postprocess``.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..motion import MotionModuleError, check_unet_fits, context_windows
from ..params import I2VParams, ParamsError
from . import a1111, forge, forge2_motion, forge2_video, forge2_windows, xyz
from .animatediff import VideoGeometry
from .forge2_params import MotionParams, split_arguments

log = logging.getLogger("i2v_adapter")


def parse_arguments(args) -> tuple[I2VParams, MotionParams]:
    i2v_args, motion = split_arguments(args)
    return a1111.parse_arguments(i2v_args), motion


def before_process(p, args) -> None:
    """Make one batch of ``p`` one video: the WebUI lays out prompts and seeds right after this."""
    try:
        params, motion = parse_arguments(args)
    except ParamsError:
        return  # process() reports it
    if params.enable:
        p.batch_size = motion.frames


def check_video(p, params: I2VParams, motion: MotionParams) -> VideoGeometry:
    """What can be refused before anything loads; the geometry with the requested window."""
    if getattr(p, "enable_hr", False):
        raise a1111.I2VAdapterError("I2V-Adapter does not work with Hires. fix: turn Hires. fix off "
                                    "(upscale the video afterwards).")
    reason = forge2_motion.refusal(p.sd_model)
    if reason:
        raise a1111.I2VAdapterError(reason)
    if int(p.batch_size) != motion.frames:
        raise a1111.I2VAdapterError(f"I2V-Adapter: the batch size ({p.batch_size}) is not the number of frames "
                                    f"({motion.frames}); another script changed it.")
    context = motion.context_length or motion.frames
    return VideoGeometry(frames=motion.frames, video_length=motion.frames, context_length=min(context, motion.frames))


def begin(p, params: I2VParams, motion: MotionParams):
    def generation(p, params, geometry):
        return Forge2Generation(p, params, geometry, motion)

    return a1111.begin(p, params, generation, check=lambda p, params: check_video(p, params, motion))


class Forge2Generation(forge.ForgeGeneration):
    """A classic-Forge generation that also brings the motion module, its schedule and the video."""

    def __init__(self, p, params: I2VParams, geometry: VideoGeometry, motion: MotionParams):
        self.motion_params = motion
        self.motion_path = ""
        try:
            self.motion_path = forge2_motion.find(motion.motion_module)
            self.motion = forge2_motion.cached_motion_module(self.motion_path)
        except MotionModuleError as error:
            # The reader names the file by its path; the server's folders are no business of the client.
            message = str(error).replace(self.motion_path, self.motion_name) if self.motion_path else str(error)
            raise a1111.I2VAdapterError(message) from None
        try:  # e.g. an SD1.5-sized checkpoint of another layout: refused before anything is patched
            check_unet_fits(p.sd_model.forge_objects.unet.model.diffusion_model, self.motion.slots())
        except ValueError as error:
            raise a1111.I2VAdapterError(f"I2V-Adapter: {error}.") from None
        limit = self.motion.max_frames
        if motion.context_length > limit:
            raise a1111.I2VAdapterError(f"I2V-Adapter: the context length ({motion.context_length}) is more than "
                                        f"this motion module's {limit} frames: set it to {limit} or less.")
        context = min(motion.context_length or limit, limit, geometry.frames)
        if context < geometry.frames and motion.context_overlap >= context:
            raise a1111.I2VAdapterError(f"I2V-Adapter: the context overlap ({motion.context_overlap}) must be less "
                                        f"than the context length ({context}).")
        geometry = VideoGeometry(geometry.frames, geometry.video_length, context)
        super().__init__(p, params, geometry)
        self.windows = context_windows(geometry.frames, context, motion.context_overlap)
        self.schedule = forge2_motion.ScheduleOverride(p.sd_model.forge_objects.unet.model.predictor, p.sd_model)

    def start(self) -> None:
        super().start()
        self._undo.append(self.schedule.restore)
        self.p.extra_generation_params.update(self.motion_params.infotext())
        self.p.extra_generation_params["I2V-Adapter motion module"] = self.motion_name

    @property
    def motion_name(self) -> str:
        return os.path.basename(self.motion_path)

    def _sample(self, original):
        sample = super()._sample(original)

        def sample_with_schedule(*args, **kwargs):
            # Before the sampler reads its sigmas (DDIM reads them when it is created, in here).
            self.schedule.apply()
            return sample(*args, **kwargs)

        return sample_with_schedule

    def patch_unet(self, p) -> None:
        super().patch_unet(p)  # the clone with the first-frame branch is now forge_objects.unet
        unet = p.sd_model.forge_objects.unet
        forge2_motion.add_motion_module(unet, self.motion)
        if len(self.windows) > 1:
            previous = unet.model_options.get("model_function_wrapper")
            unet.set_model_unet_function_wrapper(
                forge2_windows.window_wrapper(self.windows, self.geometry.frames, self.layout, previous))
        self.schedule.apply()

    def first_frame_latent(self) -> torch.Tensor:
        if self.z0 is None:
            self.z0 = encode_posterior_mean(self.p, self.image)
        return self.z0

    def write_video(self, processed) -> None:
        forge2_video.add_to_results(self.p, processed, self.geometry.frames, self.motion_params.formats,
                                    self.motion_params.fps, videos_last=xyz.in_xyz_plot(self.p))


def encode_posterior_mean(p, image) -> torch.Tensor:
    """z0 with Forge 2's VAE: the posterior's mean (deterministic), scaled as Forge scales latents."""
    from backend import memory_management
    from modules import devices, images

    resize_mode = getattr(p, "resize_mode", 0) if hasattr(p, "init_images") else 0
    resized = images.resize_image(resize_mode, image, p.width, p.height)
    vae = p.sd_model.forge_objects.vae
    memory_management.load_model_gpu(vae.patcher)
    model = vae.first_stage_model
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    pixels = pixels.to(device=vae.device, dtype=vae.vae_dtype)
    with torch.no_grad():
        moments = model.encoder(pixels)
        if model.quant_conv is not None:
            moments = model.quant_conv(moments)
        mean = torch.chunk(moments, 2, dim=1)[0]
    return model.process_in(mean).to(device=devices.device, dtype=torch.float32)
