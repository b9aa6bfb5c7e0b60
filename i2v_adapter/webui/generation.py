"""One I2V generation on any host: the picture, the adapter weights, the first-frame branch, frame 0's latent,
the prior, and the sampler callbacks that keep frame 0 clean.

The host conventions are left to each host's subclass (``a1111.generation``, ``forge.generation``, and
Forge 2's on top of classic Forge's): how the branch is installed, whether a sampler works in timesteps,
where frame 0's rows are in the denoiser's input, and which ControlNet serves the picture.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..anchor import clean_denoised, clean_keyframes
from ..color import match_video_colors
from ..hooks import FirstFrameHooks
from ..image_input import ImageInputError, picture_from_value, to_rgb8
from ..layout import FrameLayout, Window
from ..params import I2VParams
from ..prior import frame_similarity_prior, keyframe_prior
from ..weights.adapter import BASE_LABELS, BaseModelMismatch, WeightsError
from ..weights.cache import cached_adapter_weights
from . import animatediff, controlnet, many, model_files
from .controlnet import ControlNetHost
from .lifecycle import I2VAdapterError, Lifecycle, stop_with_message

log = logging.getLogger("i2v_adapter")


def _unet(p):
    model = p.sd_model.model if hasattr(p.sd_model, "model") else p.sd_model.forge_objects.unet.model  # Forge 2: no .model
    return model.diffusion_model


def _is_img2img(p) -> bool:
    return hasattr(p, "init_images")


def _user_image(p, params: I2VParams):
    image = picture_from_value(params.image)
    if image is None and _is_img2img(p) and p.init_images:
        image = p.init_images[0]
    if image is None:
        where = "in the I2V-Adapter panel or as the img2img image" if _is_img2img(p) else "in the I2V-Adapter panel"
        raise I2VAdapterError(f"I2V-Adapter needs an image: put one {where}.")
    return to_rgb8(image)


def _last_picture(params: I2VParams):
    """The picture the video ends on (None: it ends where the motion takes it)."""
    if not params.has_last_image:
        return None
    try:
        picture = picture_from_value(params.last_image, "the last frame (last_image)")
    except ImageInputError as error:
        raise I2VAdapterError(str(error)) from None
    return None if picture is None else to_rgb8(picture)


def _checkpoint_name(p) -> str:
    info = getattr(getattr(p, "sd_model", None), "sd_checkpoint_info", None)
    return os.path.basename(getattr(info, "filename", "") or "") or "(checkpoint)"


class Generation(Lifecycle):
    """State and wrappers of one I2V generation; stop() undoes everything, whatever happened."""

    controlnet: ControlNetHost  # the host's ControlNet, set by each host's subclass
    last_frame: int | None = None  # the last keyframe's index when the video ends on a picture
    z_last: torch.Tensor | None = None

    def __init__(self, p, params: I2VParams, geometry: animatediff.VideoGeometry):
        super().__init__(p)
        self.params = params
        self.geometry = geometry
        # Several pictures: one video each, frame 0 switched at the start of each of the WebUI's iterations.
        self.pictures = getattr(p, many.PICTURES, None)
        self.video_index: int | None = None
        self.image = self.pictures[0].image if self.pictures else _user_image(p, params)
        self.last_image = _last_picture(params)
        if params.keyframed and geometry.frames < 3:
            raise I2VAdapterError(f"I2V-Adapter: a video that ends on a picture (last frame or loop) needs at least "
                                  f"3 frames, got {geometry.frames}.")
        weights, self.weights_hash = self._weights()
        self.last_frame = geometry.frames - 1 if params.keyframed else None
        self.layout = FrameLayout(geometry.context_length, 0, keep_reference=geometry.windowed,
                                  skip_call=self.controlnet.reference_write_pass(p), last_frame=self.last_frame)
        try:
            self.hooks = FirstFrameHooks(_unet(p), self.layout, weights, params.scale)
        except BaseModelMismatch as error:
            raise I2VAdapterError(
                f"I2V-Adapter: {params.model} was made for {BASE_LABELS[error.adapter_base]} but the loaded model "
                f"{_checkpoint_name(p)} is {BASE_LABELS[error.model_base]}: choose an adapter file for it or none "
                f"(training-free).") from None
        except WeightsError as error:
            raise I2VAdapterError(f"I2V-Adapter: {error}") from None
        self.z0: torch.Tensor | None = None
        self.z_last: torch.Tensor | None = None
        self.timestep_sampler = False

    def _weights(self):
        if not self.params.model:
            return None, ""
        path = model_files.find(self.params.model)
        if path is None:
            known = ", ".join(model_files.names()) or "none found"
            raise I2VAdapterError(f"I2V-Adapter: no weights file named '{self.params.model}' (available: {known}).")
        try:
            return cached_adapter_weights(path)
        except WeightsError as error:  # the user picked a name: the server's folders are not theirs to see
            raise I2VAdapterError(f"I2V-Adapter: {str(error).replace(path, self.params.model)}") from None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.activate()
        self.install_branches()
        restore = animatediff.wrap_window_scheduler(self.layout)
        if restore is not None:
            self._undo.append(restore)
        # Both undone by the next generation's sweep: AnimateDiff writes after this extension's postprocess.
        if self.params.loop:
            animatediff.write_loops_once()
        if self.pictures:
            animatediff.name_videos_after([picture.name for picture in self.pictures])
        self._wrap(self.p, "sample", self._sample)
        if _is_img2img(self.p):
            self.p.denoising_strength = self.params.t0
        self.p.extra_generation_params.update(self.params.infotext(self.weights_hash))
        if self.last_frame is not None and animatediff.has_own_last_frame(self.p):
            # Ours ends exactly on the picture; AnimateDiff's only blends it into the start latents, which ours replace.
            self.p.extra_generation_params["I2V-Adapter last frame"] = (
                f"{self.p.extra_generation_params.get('I2V-Adapter last frame', 'loop')} (AnimateDiff's last frame "
                f"not used)")

    def install_branches(self) -> None:
        """Add the first-frame branch to every attn1, the host's way."""
        raise NotImplementedError

    def stop(self) -> None:
        if self._undo:
            stats = self.layout.stats
            log.info("I2V-Adapter: attn1 calls with frame 0: %d, from the bank: %d, without reference: %d, untouched: %d",
                     stats["anchored"], stats["banked"], stats["unreferenced"], stats["untouched"])
            if self.last_frame is not None:
                log.info("I2V-Adapter: attn1 calls with the last frame: %d, from the bank: %d, from the step before: "
                         "%d, without it: %d; priming calls: %d", stats["last anchored"], stats["last banked"],
                         stats["last from the previous step"], stats["last missing"], stats["priming calls"])
        super().stop()
        self.z0 = self.z_last = None
        self.layout.bank.clear()

    def _sample(self, original):
        def sample(*args, **kwargs):
            self.next_picture()
            z0 = self.first_frame_latent()
            self.last_frame_latent()
            if _is_img2img(self.p):
                self.p.init_latent = self.initial_latents(z0).to(self.p.init_latent)
            last = self.last_frame if self.last_frame is not None and not self.geometry.windowed else None
            self.layout.set_window(Window(self.geometry.context_length, 0, last))
            return original(*args, **kwargs)

        return sample

    def next_picture(self) -> None:
        """With several pictures: this iteration's picture becomes frame 0 (its latent, a loop's end, the bank anew)."""
        if not self.pictures:
            return
        index = min(int(getattr(self.p, "iteration", 0) or 0), len(self.pictures) - 1)
        if index == self.video_index:
            return
        self.video_index, picture = index, self.pictures[index]
        self.image = picture.image
        self.z0 = None
        if self.params.loop:
            self.z_last = None
        self.layout.bank.clear()
        self.p.extra_generation_params["I2V-Adapter picture"] = picture.name
        many.show_progress(index, len(self.pictures), picture.name)

    # -- latents ---------------------------------------------------------------------------
    def first_frame_latent(self) -> torch.Tensor:
        if self.z0 is None:
            self.z0 = encode_posterior_mean(self.p, self.image)
        return self.z0

    def last_frame_latent(self) -> torch.Tensor | None:
        """The last keyframe's latent: the last picture's, or z0 again for a loop; None without one."""
        if self.z_last is None and self.last_frame is not None:
            self.z_last = self.z0 if self.last_image is None else self.encode(self.last_image)
        return self.z_last

    def encode(self, image) -> torch.Tensor:
        """A picture's latent as frame 0's is made (the host's VAE, the generation size, the posterior mean)."""
        return encode_posterior_mean(self.p, image)

    def initial_latents(self, z0: torch.Tensor) -> torch.Tensor:
        seed = int(self.p.seeds[0]) if getattr(self.p, "seeds", None) else int(self.p.seed)
        generator = torch.Generator().manual_seed(seed)
        if self.z_last is not None:
            return keyframe_prior(z0.float().cpu(), self.z_last.float().cpu(), self.geometry.frames, p=self.params.p,
                                  blur_sigma=self.params.blur_sigma, generator=generator)
        return frame_similarity_prior(z0.float().cpu(), self.geometry.frames, p=self.params.p,
                                      blur_sigma=self.params.blur_sigma, generator=generator)

    # -- sampler callbacks -----------------------------------------------------------------
    def on_cfg_denoiser(self, params) -> None:
        if getattr(params.denoiser, "p", self.p) is not self.p or self.z0 is None:
            return
        self.layout.begin_step(params.denoiser.step)
        self.timestep_sampler = self.is_timestep_sampler(params.denoiser)
        rows, sigma = self.model_input_first_frame_rows(params)
        if rows:
            keyframes = [(self.z0, rows)]
            if self.z_last is not None:  # each chunk holds the whole video: the last frame ends it
                keyframes.append((self.z_last, [row + self.geometry.frames - 1 for row in rows]))
            params.x = clean_keyframes(params.x, keyframes, sigma)

    def is_timestep_sampler(self, denoiser) -> bool:
        """Whether the sampler works in timesteps (inputs not scaled by sigma, eps after cfg), the host's way."""
        raise NotImplementedError

    def model_input_first_frame_rows(self, params) -> tuple[list[int], torch.Tensor | None]:
        """Rows of frame 0 in the denoiser's input, and the sigmas to scale z0 by (None: timestep samplers)."""
        raise NotImplementedError

    def on_cfg_after_cfg(self, params) -> None:
        # k-diffusion: x is the denoised (x0) prediction; timestep samplers pass eps here: leave it.
        if self.z0 is None or self.timestep_sampler or len(params.x) != self.geometry.frames:
            return
        params.x = clean_denoised(params.x, self.z0)
        if self.z_last is not None:
            params.x[-1] = self.z_last[0].to(params.x)  # the copy clean_denoised made is ours

    def post_sample(self, samples: torch.Tensor) -> None:
        if self.z0 is not None:
            samples[0] = self.z0[0].to(samples)
        if self.z_last is not None and len(samples) == self.geometry.frames:
            samples[-1] = self.z_last[0].to(samples)

    def match_colors(self, images: list) -> list:
        if not self.params.color_match or len(images) < 2:
            return images
        frames = [(img.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for img in images]
        matched = match_video_colors(frames, ends_on_last=self.last_frame is not None)
        keyframes = {0, len(images) - 1} if self.last_frame is not None else {0}
        return [images[i] if i in keyframes else torch.from_numpy(frame).permute(2, 0, 1).to(images[i]) / 255.0
                for i, frame in enumerate(matched)]


def check_request(p, params: I2VParams):
    """What hosts with sd-webui-animatediff (A1111, classic Forge) refuse before sampling; the video geometry."""
    geometry = animatediff.geometry(p)
    if geometry is None:
        hint = "" if animatediff.installed(p) else " (install the sd-webui-animatediff extension)"
        raise I2VAdapterError(f"I2V-Adapter makes videos with AnimateDiff: enable AnimateDiff{hint}.")
    if geometry.video_length >= 2 and geometry.frames < 2:
        # AnimateDiff's before_process sets the batch to the frame count; it did not, so its setup failed
        raise I2VAdapterError(f"I2V-Adapter: AnimateDiff did not start its {geometry.video_length}-frame video (its motion "
                              "module failed to load, e.g. an SD1.5 module with an SDXL checkpoint: the console says why).")
    if geometry.frames < 2 or geometry.video_length < 2:
        raise I2VAdapterError("I2V-Adapter needs a video of at least 2 frames: set AnimateDiff's number of frames to 8 or more.")
    if getattr(p, "enable_hr", False):
        raise I2VAdapterError("I2V-Adapter does not work with Hires. fix: turn Hires. fix off (upscale the video afterwards).")
    return geometry


def encode_posterior_mean(p, image) -> torch.Tensor:
    """z0 at the generation size: the VAE posterior's mean, so frame 0 is the same for every seed.

    The WebUI's own encode samples the posterior with the global RNG; the mean is deterministic.
    """
    from modules import devices, images

    resize_mode = getattr(p, "resize_mode", 0) if _is_img2img(p) else 0
    resized = images.resize_image(resize_mode, image, p.width, p.height)
    first_stage = p.sd_model.first_stage_model
    parameter = next(first_stage.parameters())
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    pixels = pixels.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad(), devices.autocast():
        moments = first_stage.quant_conv(first_stage.encoder(pixels))
        mean = torch.chunk(moments, 2, dim=1)[0]
    return (mean * p.sd_model.scale_factor).to(device=devices.device, dtype=torch.float32)


def prepare_controlnet(p, params: I2VParams, host: ControlNetHost) -> None:
    """Before any script's before_process: ControlNet units from the API, and the IP-Adapter unit."""
    try:
        converted = host.convert_api_units(p)
        if converted:
            log.info("I2V-Adapter: converted %d ControlNet unit(s) of the request for AnimateDiff", converted)
        if params.ip_adapter:
            controlnet.use_image_as_ip_adapter_content(p, _user_image(p, params), params.ip_adapter_weight, host)
    except (controlnet.ControlNetError, I2VAdapterError, ImageInputError) as error:
        stop_with_message(p, str(error))
    except Exception as error:  # e.g. a unit dict ControlNet itself refuses
        log.exception("I2V-Adapter could not prepare the ControlNet units")
        stop_with_message(p, f"I2V-Adapter could not prepare the ControlNet units: {error}")


