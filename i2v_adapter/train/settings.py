"""Every setting of one training run, with the paper's values as defaults."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

MIXED_PRECISION = ("no", "fp16", "bf16")
# Settings that decide which samples a step sees: a resumed run with other values is a different run.
SAMPLE_DEFINING = ("frames", "resolution", "stride", "batch_size", "gradient_accumulation", "seed", "text_dropout")


@dataclass
class TrainSettings:
    data: str                           # folder of videos, or a CSV of path + caption
    checkpoint: str                     # base model: diffusers folder, single SD1.5 file or hub id
    motion_module: str                  # AnimateDiff motion module (frozen)
    out: str                            # the adapter file to write (.safetensors)
    tokenizer: str | None = None        # CLIP tokenizer folder, for a single-file checkpoint
    frames: int = 16                    # per clip; frame 0 is the clean condition
    resolution: int = 256               # square training size (short side resized, centre crop)
    stride: int = 4                     # take every stride-th frame of the video
    batch_size: int = 1                 # clips per process and micro-step
    gradient_accumulation: int = 1
    learning_rate: float = 1e-4         # AdamW, constant (paper)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    steps: int = 1000                   # optimizer steps
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 42
    text_dropout: float = 0.1           # share of captions replaced by "" (classifier-free guidance)
    image_dropout: float = 0.1          # share of IP-Adapter tokens replaced by the unconditional ones
    resume: str | None = None           # a checkpoint folder, or the checkpoints folder (latest one)
    save_every: int = 0                 # steps between checkpoints; 0: only the last step
    validate_every: int = 0             # steps between validation videos; 0: none
    validation_image: str | None = None  # default: frame 0 of a clip held out of training
    validation_prompt: str | None = None
    validation_steps: int = 25
    checkpoints_dir: str | None = None  # default: "<out without suffix>-checkpoints" beside the output
    workers: int = 2                    # DataLoader worker processes
    decoder: str = "auto"               # ffmpeg (imageio-ffmpeg), opencv, or auto
    ip_adapter: str | None = None       # optional content adapter on frame 0 (frozen)
    image_encoder: str | None = None
    motion_heads: int = 8
    motion_norm_groups: int = 32
    progress: bool = True

    def __post_init__(self):
        problems = []
        if self.frames < 2:
            problems.append("--frames must be at least 2 (frame 0 is the condition, the rest are learned)")
        for name in ("resolution", "stride", "batch_size", "gradient_accumulation", "steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.resolution % 8:
            problems.append("--resolution must be a multiple of 8 (the VAE's downscale)")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
        for name in ("text_dropout", "image_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"--{name.replace('_', '-')} must be in [0, 1]")
        if not str(self.out).endswith(".safetensors"):
            problems.append(f"{self.out}: the output file name must end in .safetensors")
        if (self.ip_adapter is None) != (self.image_encoder is None):
            problems.append("--ip-adapter and --image-encoder go together")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def checkpoints_folder(self) -> Path:
        if self.checkpoints_dir:
            return Path(self.checkpoints_dir)
        out = Path(self.out)
        return out.with_name(out.stem + "-checkpoints")

    def to_dict(self) -> dict:
        return asdict(self)
