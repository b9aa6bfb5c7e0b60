"""I2V-Adapter for the WebUI: the Script and its callbacks. The work is in the i2v_adapter package."""
from dataclasses import replace

from modules import script_callbacks, scripts, shared

from i2v_adapter.params import ParamsError
from i2v_adapter.webui import a1111, model_files, settings, xyz
from i2v_adapter.webui.ui import Panel


class I2VAdapterScript(scripts.Script):
    def title(self):
        return "I2V-Adapter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        panel = Panel(is_img2img)
        self.infotext_fields = panel.infotext_fields
        self.paste_field_names = []
        return panel.values

    def process(self, p, *args):
        # Runs for every generation, enabled or not: first remove anything a failed run left behind.
        a1111.sweep(getattr(getattr(p.sd_model, "model", None), "diffusion_model", None))
        try:
            params = a1111.parse_arguments(args)
            params = replace(params, model=model_files.to_param(params.model), **xyz.overrides(p))
        except ParamsError as error:
            a1111.stop_with_message(p, str(error))
            return
        if params.enable:
            a1111.begin(p, params)

    def post_sample(self, p, ps, *args):
        generation = a1111.active_generation()
        if generation is not None and generation.p is p:
            generation.post_sample(ps.samples)

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        generation = a1111.active_generation()
        if generation is not None and generation.p is p:
            pp.images[:] = generation.match_colors(list(pp.images))

    def postprocess(self, p, processed, *args):
        generation = a1111.active_generation()
        if generation is not None and generation.p is p:
            generation.stop()


def _on_cfg_denoiser(params):
    generation = a1111.active_generation()
    if generation is not None:
        generation.on_cfg_denoiser(params)


def _on_cfg_after_cfg(params):
    generation = a1111.active_generation()
    if generation is not None:
        generation.on_cfg_after_cfg(params)


def _on_script_unloaded():
    a1111.sweep(getattr(getattr(shared.sd_model, "model", None), "diffusion_model", None))


script_callbacks.on_cfg_denoiser(_on_cfg_denoiser)
script_callbacks.on_cfg_after_cfg(_on_cfg_after_cfg)
script_callbacks.on_script_unloaded(_on_script_unloaded)
script_callbacks.on_ui_settings(settings.add_settings)
script_callbacks.on_before_ui(xyz.add_axes)
