"""Text conditioning of the base model, for sampling and training: SD1.5's one CLIP text encoder, or SDXL's two.

SDXL (a UNet with ``addition_embed_type="text_time"``) reads the penultimate hidden states of both encoders
side by side, the second encoder's pooled projection, and six size ids (original size, crop corner, target
size; here the generated size, uncropped). Its second encoder and tokenizer come from the diffusers folder's
``text_encoder_2/`` and ``tokenizer_2/``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..weights.adapter import WeightsError


def is_sdxl(unet) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def _token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class TextConditioning:
    """``encode(captions)``: ``(context (B, tokens, width), added_cond_kwargs)`` for the UNet, gradient-free.

    ``size``: (height, width) for SDXL's size ids, unless ``encode`` is given one.
    """

    def __init__(self, tokenizer, text_encoder, second=None, size: tuple[int, int] | None = None):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.second = second          # (tokenizer_2, text_encoder_2) for SDXL
        self.size = size

    @classmethod
    def of_parts(cls, parts, size: tuple[int, int] | None = None) -> "TextConditioning":
        """The conditioning of loaded :class:`ModelParts`; an SDXL UNet without its second encoder is refused."""
        if is_sdxl(parts.unet) and parts.second_text is None:
            raise WeightsError("this SDXL model has no second text encoder: give its diffusers folder "
                               "(text_encoder_2/ and tokenizer_2/ beside unet/)")
        return cls(parts.tokenizer, parts.text_encoder, parts.second_text, size)

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.text_encoder] + ([self.second[1]] if self.second else [])

    def encode(self, captions: list[str], device, dtype, size: tuple[int, int] | None = None
               ) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            if self.second is None:
                return self.text_encoder(_token_ids(self.tokenizer, captions).to(device))[0].to(dtype), {}
            first = self.text_encoder(_token_ids(self.tokenizer, captions).to(device), output_hidden_states=True)
            tokenizer_2, text_encoder_2 = self.second
            second = text_encoder_2(_token_ids(tokenizer_2, captions).to(device), output_hidden_states=True)
        context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1).to(dtype)
        height, width = size or self.size
        ids = [height, width, 0, 0, height, width]
        time_ids = torch.tensor([ids] * len(captions), device=device, dtype=dtype)
        return context, {"text_embeds": second.text_embeds.to(dtype), "time_ids": time_ids}


def load_second_text_encoder(checkpoint: str, variant: str | None = None):
    """``(tokenizer_2, text_encoder_2)`` from an SDXL diffusers folder (``variant``: e.g. its fp16 weights)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(checkpoint)
    if not (folder / "text_encoder_2").is_dir() or not (folder / "tokenizer_2").is_dir():
        raise WeightsError(f"{checkpoint}: an SDXL model needs its diffusers folder (text_encoder_2/ and "
                           "tokenizer_2/ beside unet/)")
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"), local_files_only=True)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"), variant=variant,
                                                                 local_files_only=True)
    return tokenizer_2, text_encoder_2.eval()
