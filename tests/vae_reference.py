"""Encode and decode with a checkpoint's own VAE, outside the WebUI: the reference for frame 0."""
from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

SD15_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
SCALE_FACTOR = 0.18215
PREFIX = "first_stage_model."


class ReferenceVAE:
    def __init__(self, checkpoint_path: str):
        from ldm.modules.diffusionmodules.model import Decoder, Encoder

        state = {k[len(PREFIX):]: v.float() for k, v in load_file(checkpoint_path).items() if k.startswith(PREFIX)}
        self.encoder, self.decoder = Encoder(**SD15_VAE).eval(), Decoder(**SD15_VAE).eval()
        self.quant_conv, self.post_quant_conv = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(4, 4, 1)
        for name, module in (("encoder", self.encoder), ("decoder", self.decoder),
                             ("quant_conv", self.quant_conv), ("post_quant_conv", self.post_quant_conv)):
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})

    @torch.no_grad()
    def encode_mean(self, image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        mean = self.quant_conv(self.encoder(pixels)).chunk(2, dim=1)[0]
        return mean * SCALE_FACTOR

    @torch.no_grad()
    def decode_uint8(self, latent: torch.Tensor) -> np.ndarray:
        """As the WebUI turns a latent into an image: decode, to [0, 1], times 255, truncated."""
        pixels = self.decoder(self.post_quant_conv(latent / SCALE_FACTOR))[0]
        pixels = torch.clamp((pixels + 1) / 2, 0, 1)
        return (255.0 * np.moveaxis(pixels.numpy(), 0, 2)).astype(np.uint8)
