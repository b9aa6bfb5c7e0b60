"""An SDXL diffusers folder (what the trainer and ``generate`` read) from a single-file SDXL checkpoint (what the
WebUIs keep), offline: diffusers' single-file converters with SDXL base's configs written here, one part at a
time, read lazily from the file, so that the memory peak is the UNet in fp16 (about 5 GB), not the whole file.

Both tokenizers are CLIP's BPE vocabulary (a CLIP ViT-L/14 tokenizer folder is given); the second pads with
"!" as SDXL's second tokenizer does. Weights are written in fp16.

    python tests/sdxl_folder.py SDXL.safetensors OUT_FOLDER --tokenizer CLIP_TOKENIZER_FOLDER
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "attention_head_dim": [5, 10, 20],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32,
}
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 1024, "scaling_factor": 0.13025,
    "force_upcast": True,
}
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
          "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
CLIP_BIG_G = {**CLIP_L, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
              "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}

_UNET, _VAE = "model.diffusion_model.", "first_stage_model."
_CLIP_L, _CLIP_G = "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."


def read_part(handle, prefix: str) -> dict[str, torch.Tensor]:
    return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}


def fill(model: torch.nn.Module, state_dict: dict, what: str) -> torch.nn.Module:
    """``state_dict`` into ``model`` (built empty on the meta device), every key used, tensors not copied."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{what}: missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]}")
    return model


def save_text_encoder(model_class, config: dict, state_dict: dict, out: Path) -> None:
    from transformers import CLIPTextConfig

    model = model_class(CLIPTextConfig(**config))  # small enough to build for real (position_ids filled in)
    names = set(model.state_dict())
    fitted = {}
    for key, tensor in state_dict.items():  # transformers versions name CLIP with or without "text_model."
        bare = key.removeprefix("text_model.")
        name = next((n for n in (key, bare, f"text_model.{bare}") if n in names), key)
        if not name.endswith("position_ids"):
            fitted[name] = tensor
    fill(model, fitted, out.name)
    model.half().save_pretrained(out)


def build_sdxl_folder(single_file: Path, out: Path, tokenizer_dir: Path) -> dict:
    """Write ``out`` (unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/); returns timings."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors import safe_open
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    seconds, start = {}, time.time()
    with safe_open(str(single_file), "pt") as handle:
        with torch.device("meta"):
            unet = UNet2DConditionModel(**SDXL_UNET)
        tensors = read_part(handle, _UNET)
        fill(unet, convert_ldm_unet_checkpoint(tensors, unet.config), "UNet").half().save_pretrained(out / "unet")
        del unet, tensors
        seconds["unet"] = time.time() - start
        with torch.device("meta"):
            vae = AutoencoderKL(**SDXL_VAE)
        state = convert_ldm_vae_checkpoint(read_part(handle, _VAE), vae.config)
        fill(vae, state, "VAE").half().save_pretrained(out / "vae")
        save_text_encoder(CLIPTextModel, CLIP_L, convert_ldm_clip_checkpoint(read_part(handle, _CLIP_L)),
                          out / "text_encoder")
        # The converter reads the width from the model only when the file has no text projection.
        width = SimpleNamespace(config=SimpleNamespace(hidden_size=CLIP_BIG_G["hidden_size"]))
        state = convert_open_clip_checkpoint(width, read_part(handle, _CLIP_G), prefix=_CLIP_G)
        save_text_encoder(CLIPTextModelWithProjection, CLIP_BIG_G, state, out / "text_encoder_2")
    seconds["all"] = time.time() - start
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    tokenizer.save_pretrained(out / "tokenizer")
    tokenizer.pad_token = "!"  # SDXL's second tokenizer pads with "!" (id 0), as open_clip does
    tokenizer.save_pretrained(out / "tokenizer_2")
    (out / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}, indent=1))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("single_file", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True, help="a CLIP ViT-L/14 tokenizer folder")
    args = parser.parse_args()
    print(build_sdxl_folder(args.single_file, args.out, args.tokenizer))


if __name__ == "__main__":
    main()
