"""I2V-Adapter for the WebUI: the Script and its callbacks. The work is in the i2v_adapter package."""
from dataclasses import replace

from modules import script_callbacks, scripts, shared

from i2v_adapter.params import ParamsError
from i2v_adapter.webui import batch_tab, host, lifecycle, many, model_files, page, refusal, send_to, settings, xyz
from i2v_adapter.webui.generation import check_request, prepare_controlnet
from i2v_adapter.webui.ui import Panel

# Each host its own folder: A1111's generation, classic Forge's (UNet patched per sampling), and on Forge 2
# the classic-Forge one with our own motion module on top.
HOST = host.host()
FORGE2 = HOST == host.NEW_FORGE
if HOST == host.A1111:
    from i2v_adapter.webui.a1111.generation import A1111Generation as GENERATION
else:
    from i2v_adapter.webui.forge import animatediff_api
    from i2v_adapter.webui.forge.generation import ForgeGeneration as GENERATION
if FORGE2:
    from i2v_adapter.webui.forge2 import generation as forge2
    from i2v_adapter.webui.forge2 import motion as forge2_motion
    from i2v_adapter.webui.forge2 import motion_lora as forge2_motion_lora
    from i2v_adapter.webui.forge2 import ui as forge2_ui


def parse_arguments(args):
    """(I2VParams, the Forge 2 video settings or None)."""
    return forge2.parse_arguments(args) if FORGE2 else (lifecycle.parse_arguments(args), None)


class I2VAdapterScript(scripts.Script):
    def title(self):
        return "I2V-Adapter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        motion = forge2_ui.MotionSection(is_img2img) if FORGE2 else None
        panel = Panel(is_img2img, header=motion.source if motion else None)
        self.infotext_fields = panel.infotext_fields
        self.paste_field_names = []
        if not FORGE2:
            return panel.values
        with panel.enable:  # the motion section goes inside the panel's accordion
            motion.build(panel.picture_parts)
        self.infotext_fields = self.infotext_fields + motion.infotext_fields
        return panel.values + motion.values

    def before_process(self, p, *args):
        if FORGE2:
            forge2.before_process(p, args)
        try:
            params, _ = parse_arguments(args)
            if params.enable:
                many.resolve(p, params)  # several pictures: the batch count becomes their number
        except ParamsError:
            return  # process() reports it
        except lifecycle.I2VAdapterError as error:
            lifecycle.stop_with_message(p, str(error))

    def setup(self, p, *args):
        # Runs before every script's before_process: the only moment to shape the request
        # (ControlNet's units, Forge's AnimateDiff arguments) before sd-webui-animatediff reads it.
        try:
            params, _ = parse_arguments(args)
        except ParamsError:
            return  # process() reports it
        if params.enable and HOST == host.CLASSIC_FORGE:
            animatediff_api.guard_animatediff_api(p)
        if params.enable:
            prepare_controlnet(p, params, GENERATION.controlnet)
        if params.enable and self.is_img2img and not getattr(p, "is_api", False):
            batch_tab.wrap(p)  # the Batch tab, if that is what runs: one video per picture

    def process(self, p, *args):
        # Runs for every generation, enabled or not: first remove anything a failed run left behind.
        lifecycle.sweep(getattr(getattr(p.sd_model, "model", None), "diffusion_model", None))
        if HOST != host.A1111:
            animatediff_api.sweep()
        if FORGE2:
            forge2_motion.restore_schedule()
        try:
            params, motion = parse_arguments(args)
            params = replace(params, model=model_files.to_param(params.model), **xyz.overrides(p))
            motion = xyz.motion_overrides(p, motion)
        except ParamsError as error:
            lifecycle.stop_with_message(p, str(error))
            return
        if params.enable and FORGE2:
            forge2.begin(p, params, motion)
        elif params.enable:
            lifecycle.begin(p, params, GENERATION, check=check_request)

    def process_batch(self, p, *args, **kwargs):
        generation = lifecycle.active_generation()
        if FORGE2 and hasattr(generation, "video") and generation.p is p:
            generation.video.use_frame_prompts(p)  # prompt travel: the WebUI conditions the batch next

    def process_before_every_sampling(self, p, *args, **kwargs):
        generation = lifecycle.active_generation()
        if hasattr(generation, "patch_unet") and generation.p is p:
            generation.patch_unet(p)

    def post_sample(self, p, ps, *args):
        generation = lifecycle.active_generation()
        if generation is not None and generation.p is p:
            generation.post_sample(ps.samples)

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        generation = lifecycle.active_generation()
        if generation is not None and generation.p is p:
            pp.images[:] = generation.match_colors(list(pp.images))

    def postprocess(self, p, processed, *args):
        message = getattr(p, lifecycle.STOP_MESSAGE, None)
        if message:
            refusal.show_in_plot_cell(p, processed, message)
        generation = lifecycle.active_generation()
        if generation is not None and generation.p is p:
            if FORGE2:
                generation.write_video(processed)
            generation.stop()


def _on_cfg_denoiser(params):
    generation = lifecycle.active_generation()
    if generation is not None:
        generation.on_cfg_denoiser(params)


def _on_cfg_after_cfg(params):
    generation = lifecycle.active_generation()
    if generation is not None:
        generation.on_cfg_after_cfg(params)


def _on_script_unloaded():
    lifecycle.sweep(getattr(getattr(shared.sd_model, "model", None), "diffusion_model", None))
    if HOST != host.A1111:
        animatediff_api.sweep()
    if FORGE2:
        forge2_motion.restore_schedule()


script_callbacks.on_cfg_denoiser(_on_cfg_denoiser)
script_callbacks.on_cfg_after_cfg(_on_cfg_after_cfg)
script_callbacks.on_script_unloaded(_on_script_unloaded)
script_callbacks.on_ui_settings(settings.add_settings)
script_callbacks.on_before_ui(lambda: xyz.add_axes(forge2=FORGE2))
if FORGE2:
    script_callbacks.on_ui_settings(forge2_motion.add_settings)
    script_callbacks.on_ui_settings(forge2_motion_lora.add_settings)


def _on_before_ui():
    page.reset()
    send_to.reset()


script_callbacks.on_before_ui(_on_before_ui)
script_callbacks.on_after_component(page.on_after_component)
send_to.install()
