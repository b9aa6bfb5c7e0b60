"""Forge 2 (``backend/``): one I2V generation with this extension's own motion module.

Forge 2 has no AnimateDiff, so the extension is its own: the video settings come from the panel's motion
section (:mod:`.params`), ``p.batch_size`` becomes the frame count before the WebUI lays out its
batches, and each sampling gets a UnetPatcher clone with the first-frame branch (as on classic Forge)
plus the motion module (:mod:`.motion`) with its motion LoRAs (:mod:`.motion_lora`), windows
for long videos (:mod:`.windows`) and AnimateDiff's noise schedule, which is put back on every path.
"Motion only" makes the same video without a picture or branch. The video is written in ``postprocess``.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ...layout import FrameLayout
from ...motion import MotionModuleError, check_unet_fits, context_windows
from ...motion.windows import LOOP_EVERY_STRIDE, LOOP_WITH_PROMPTS
from ...params import INFOTEXT_PREFIX, I2VParams, ParamsError
from ...pipeline.video import missing_writer
from ...prompt_travel import PromptTravel, PromptTravelError, travelled_conditioning
from .. import lifecycle, xyz
from ..animatediff import VideoGeometry
from ..forge.generation import ForgeGeneration
from ..lifecycle import I2VAdapterError
from . import motion as motion_modules
from . import motion_lora, video, windows
from .params import MotionParams, split_arguments

log = logging.getLogger("i2v_adapter")


def parse_arguments(args) -> tuple[I2VParams, MotionParams]:
    i2v_args, motion = split_arguments(args)
    return lifecycle.parse_arguments(i2v_args), motion


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
        raise I2VAdapterError("I2V-Adapter does not work with Hires. fix: turn Hires. fix off "
                              "(upscale the video afterwards).")
    reason = motion_modules.refusal(p.sd_model)
    if reason:
        raise I2VAdapterError(reason)
    if int(p.batch_size) != motion.frames:
        raise I2VAdapterError(f"I2V-Adapter: the batch size ({p.batch_size}) is not the number of frames "
                              f"({motion.frames}); another script changed it.")
    context = motion.context_length or motion.frames
    return VideoGeometry(frames=motion.frames, video_length=motion.frames, context_length=min(context, motion.frames))


def begin(p, params: I2VParams, motion: MotionParams):
    def generation(p, params, geometry):
        if motion.motion_only:
            return MotionOnlyGeneration(p, geometry, motion)
        return Forge2Generation(p, params, geometry, motion)

    return lifecycle.begin(p, params, generation, check=lambda p, params: check_video(p, params, motion))


class MotionVideo:
    """What a Forge 2 video needs with or without a picture: the motion module with its LoRAs, the windows,
    AnimateDiff's noise schedule, and the files. Everything it changes goes on its generation's undo list."""

    def __init__(self, p, motion: MotionParams, frames: int):
        self.params = motion
        self.frames = frames
        missing = missing_writer([video.SUFFIXES[name] for name in motion.formats])
        if missing:
            raise I2VAdapterError(
                f"I2V-Adapter: MP4 and WEBM need the {missing} package, which this WebUI's Python lacks: restart the "
                f"WebUI without --skip-install so that the extension's install step adds it (or pip install {missing} "
                f"into its Python), or choose GIF or WEBP.")
        self.path = ""
        try:
            self.path = motion_modules.find(motion.motion_module)
            self.module = motion_modules.cached_motion_module(self.path)
        except MotionModuleError as error:
            # The reader names the file by its path; the server's folders are no business of the client.
            message = str(error).replace(self.path, self.name) if self.path else str(error)
            raise I2VAdapterError(message) from None
        wrong_model = motion_modules.mismatch(p.sd_model, self.module, self.name)
        if wrong_model:
            raise I2VAdapterError(wrong_model)
        try:  # e.g. a checkpoint of the right family with other widths: refused before anything is patched
            check_unet_fits(p.sd_model.forge_objects.unet.model.diffusion_model, self.module.slots())
        except ValueError as error:
            raise I2VAdapterError(f"I2V-Adapter: {error}.") from None
        self.context = min(motion.context_length or self.module.native_window, frames)
        self._check_window(motion.context_length)
        if self.context < frames and motion.context_overlap >= self.context:
            raise I2VAdapterError(f"I2V-Adapter: the context overlap ({motion.context_overlap}) must be less "
                                  f"than the context length ({self.context}).")
        self.windows = context_windows(frames, self.context, motion.context_overlap, motion.closed_loop)
        self.loras = motion_lora.load_all(motion.motion_lora, self.module, self.name)
        self.travel = _prompt_travel(getattr(p, "main_prompt", None) or p.prompt, frames)
        self.loop_prompts = motion.closed_loop in (LOOP_WITH_PROMPTS, LOOP_EVERY_STRIDE)
        self._whole_prompts: list[str] | None = None
        self.schedule = motion_modules.ScheduleOverride(p.sd_model.forge_objects.unet.model.predictor, p.sd_model,
                                                        self.module.schedule)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def _check_window(self, context_length: int) -> None:
        limit, native = self.module.max_frames, self.module.native_window
        if context_length > limit:
            raise I2VAdapterError(f"I2V-Adapter: the context length ({context_length}) is more than "
                                  f"this motion module's {limit} frames: set it to {limit} or less.")
        if context_length > native:
            # HotShot-XL's table holds 24 positions, but it learnt motion on 8-frame clips only.
            raise I2VAdapterError(f"I2V-Adapter: {self.name} ({self.module.describe().split(' (')[0]}) was trained "
                                  f"on {native}-frame windows: set the context length to {native} or less (0 chooses "
                                  f"{native}); longer videos are made in windows of it.")

    def start(self, p, undo: list) -> None:
        undo.append(self.schedule.restore)
        if self.loras:
            undo.append(motion_lora.apply(self.module, self.loras))
        p.extra_generation_params.update(self.params.infotext())
        p.extra_generation_params["I2V-Adapter motion module"] = self.name

    def use_frame_prompts(self, p) -> None:
        """Before the WebUI conditions the batch: one prompt per frame, each keyframe's own (its extra-network
        tags already taken out by the WebUI), so that the keyframe rows of the conditioning are theirs."""
        if self.travel is None or len(p.prompts) != self.frames:
            return
        travel = _prompt_travel(p.prompts[0], self.frames)
        if travel is not None:
            self._whole_prompts = list(p.prompts)
            p.prompts = travel.frame_prompts(self.frames)

    def restore_whole_prompts(self, p) -> None:
        """After conditioning: the whole prompt again, for the infotext."""
        if self._whole_prompts is not None:
            p.prompts, self._whole_prompts = self._whole_prompts, None

    def travel_conditioning(self, p, params) -> None:
        """Every sampling step of ``p``: frames between keyframes get their keyframes' interpolated conditioning."""
        if self.travel is None or getattr(params.denoiser, "p", p) is not p:
            return
        params.text_cond = _per_frame(params.text_cond, self.frames,
                                      lambda cond: travelled_conditioning(cond, self.travel.frames, self.loop_prompts))

    def with_schedule(self, sample):
        def sample_with_schedule(*args, **kwargs):
            # Before the sampler reads its sigmas (DDIM reads them when it is created, in here).
            self.schedule.apply()
            return sample(*args, **kwargs)

        return sample_with_schedule

    def patch(self, p, unet, layout) -> None:
        """Before every sampling, after the WebUI conditioned the batch (so the whole prompt is back for the infotext)."""
        self.restore_whole_prompts(p)
        motion_modules.add_motion_module(unet, self.module)
        if len(self.windows) > 1:
            previous = unet.model_options.get("model_function_wrapper")
            unet.set_model_unet_function_wrapper(windows.window_wrapper(self.windows, self.frames, layout, previous))
        self.schedule.apply()

    def write(self, p, processed, loop: bool = False, pictures: list[str] | None = None) -> None:
        video.add_to_results(p, processed, self.frames, self.params, videos_last=xyz.in_xyz_plot(p), loop=loop,
                             pictures=pictures)


def _prompt_travel(prompt, frames: int) -> PromptTravel | None:
    try:
        return PromptTravel.parse(prompt, frames) if isinstance(prompt, str) else None
    except PromptTravelError as error:
        raise I2VAdapterError(str(error)) from None


def _per_frame(cond, frames: int, change):
    """``change`` applied to each conditioning tensor with one row per frame (SDXL's is a dict of them).

    The prompt's AND makes more rows than frames: those are left as they are."""
    if isinstance(cond, torch.Tensor):
        return change(cond) if cond.shape[0] == frames else cond
    if isinstance(cond, dict):
        for key, value in cond.items():
            if isinstance(value, torch.Tensor) and value.shape[0] == frames:
                cond[key] = change(value)
    return cond


class Forge2Generation(ForgeGeneration):
    """A classic-Forge generation that also brings the motion module, its schedule and the video."""

    def __init__(self, p, params: I2VParams, geometry: VideoGeometry, motion: MotionParams):
        self.video = MotionVideo(p, motion, geometry.frames)
        super().__init__(p, params, VideoGeometry(geometry.frames, geometry.video_length, self.video.context))

    def start(self) -> None:
        super().start()
        self.video.start(self.p, self._undo)

    def _sample(self, original):
        return self.video.with_schedule(super()._sample(original))

    def patch_unet(self, p) -> None:
        super().patch_unet(p)  # the clone with the first-frame branch is now forge_objects.unet
        self.video.patch(p, p.sd_model.forge_objects.unet, self.layout)

    def on_cfg_denoiser(self, params) -> None:
        self.video.travel_conditioning(self.p, params)
        super().on_cfg_denoiser(params)

    def encode(self, image) -> torch.Tensor:
        return encode_posterior_mean(self.p, image)

    def first_frame_latent(self) -> torch.Tensor:
        if self.z0 is None:
            self.z0 = self.encode(self.image)
        return self.z0

    def write_video(self, processed) -> None:
        names = [picture.name for picture in self.pictures] if self.pictures else None
        self.video.write(self.p, processed, loop=self.params.loop, pictures=names)


class MotionOnlyGeneration(lifecycle.Lifecycle):
    """A plain AnimateDiff video on Forge 2: the motion module on a UnetPatcher clone, no picture, no branch.

    txt2img starts every frame from its own noise; img2img from the WebUI's init latent, the picture noised
    to the denoising strength in every frame, as AnimateDiff does.
    """

    def __init__(self, p, geometry: VideoGeometry, motion: MotionParams):
        super().__init__(p)
        self.video = MotionVideo(p, motion, geometry.frames)
        self.geometry = VideoGeometry(geometry.frames, geometry.video_length, self.video.context)
        # The windows tell the layout where they are; no first-frame branch reads it here.
        self.layout = FrameLayout(self.video.context, None)

    def start(self) -> None:
        self.activate()
        self._wrap(self.p, "sample", self.video.with_schedule)
        self.video.start(self.p, self._undo)
        self.p.extra_generation_params[INFOTEXT_PREFIX] = "on"

    def patch_unet(self, p) -> None:
        unet = p.sd_model.forge_objects.unet.clone()
        self.video.patch(p, unet, self.layout)
        p.sd_model.forge_objects.unet = unet

    def on_cfg_denoiser(self, params) -> None:
        self.video.travel_conditioning(self.p, params)

    def write_video(self, processed) -> None:
        self.video.write(self.p, processed)


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
