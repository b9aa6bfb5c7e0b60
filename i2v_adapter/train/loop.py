"""The training run: one process, or one of many under ``accelerate launch`` (DDP or any accelerate config).

Frozen: base UNet, motion module, VAE, text encoder (and IP-Adapter). Learning: the adapter only, fp32,
AdamW at a constant rate. Frozen parts run in the mixed-precision dtype (the VAE stays fp32).
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import load_checkpoint, save_checkpoint, write_adapter
from .clips import list_clips
from .conditioning import is_sdxl, load_conditioning
from .data import ClipSamples, sample_loader
from .decode import choose_decoder, frame_span
from .recipe.model import FirstFrameAdapter, TrainingHooks
from .recipe.objective import make_noise_scheduler
from .settings import TrainSettings
from .step import batch_loss
from .validation import choose_validation_input, write_validation_video

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    out: Path
    first_step: int                          # the step this run started from (0, or the resumed one)
    losses: list[float] = field(default_factory=list)   # per optimizer step, mean over processes
    step_seconds: list[float] = field(default_factory=list)
    samples_per_step: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # unusable video -> why
    layers: int = 0
    parameters: int = 0
    validation_videos: list[Path] = field(default_factory=list)
    parts: object = None                     # the frozen models as trained with (pipeline ModelParts)
    main_process: bool = True                # the one that wrote the file (and reports)

    @property
    def samples_per_second(self) -> float:
        """Over the run without its first step (which includes start-up and worker spawn)."""
        timed = self.step_seconds[1:] or self.step_seconds
        return self.samples_per_step * len(timed) / sum(timed) if timed and sum(timed) > 0 else 0.0


def _freeze(parts, conditioning, device, dtype) -> None:
    for module in (parts.unet, parts.vae, *conditioning.modules):
        module.requires_grad_(False).eval()
    modules = [parts.unet, *conditioning.modules] + ([parts.ip_adapter.encoder.model] if parts.ip_adapter else [])
    for module in modules:
        module.to(device)
        if dtype != torch.float32:  # asked only when needed: diffusers warns about any dtype cast
            module.to(dtype)
    parts.vae.to(device)  # stays fp32: fp16 VAEs overflow, and it only encodes here
    if parts.ip_adapter is not None:
        parts.ip_adapter.encoder.model.requires_grad_(False).eval()


@contextmanager
def _branches_on(parts, hooks: TrainingHooks):
    """The training branch (and the frozen IP-Adapter) on the UNet; taken off for validation by the caller."""
    patch = parts.ip_adapter.patch if parts.ip_adapter is not None else None
    try:
        if patch is not None:
            patch.install()
            parts.unet.requires_grad_(False)  # the IP-Adapter's processors are new modules: frozen too
        hooks.install()
        yield
    finally:
        hooks.remove()
        if patch is not None:
            patch.remove()


class _Log:
    """Progress bar (main process) and a JSON line per step beside the checkpoints."""

    def __init__(self, accelerator, settings: TrainSettings, start: int):
        from tqdm.auto import tqdm

        self.main = accelerator.is_main_process
        self.bar = tqdm(total=settings.steps, initial=start, desc="training", unit="step",
                        disable=not (self.main and settings.progress))
        self.file = None
        if self.main:
            settings.checkpoints_folder.mkdir(parents=True, exist_ok=True)
            self.file = open(settings.checkpoints_folder / "log.jsonl", "a", encoding="utf-8")

    def say(self, text: str) -> None:
        if self.main:  # stderr beside the bar: stdout keeps the one result line
            self.bar.write(text, file=sys.stderr)

    def step(self, step: int, loss: float, samples_per_second: float, skipped: int) -> None:
        if not self.main:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:.2f}")
        record = {"step": step, "loss": loss, "samples_per_s": round(samples_per_second, 3), "skipped": skipped}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def _load(settings: TrainSettings, log: _Log):
    from ..pipeline.loading import load_model_parts

    parts = load_model_parts(settings.checkpoint, settings.motion_module, settings.tokenizer, settings.motion_heads,
                             settings.motion_norm_groups, settings.ip_adapter, settings.image_encoder)
    for note in parts.notes:
        log.say(f"note: {note}")
    if settings.frames > parts.motion_max_frames:
        raise ValueError(f"--frames {settings.frames} is more than the motion module's {parts.motion_max_frames}")
    return parts


def train(settings: TrainSettings) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    accelerator = Accelerator(mixed_precision=settings.mixed_precision,
                              gradient_accumulation_steps=settings.gradient_accumulation)
    device, dtype = accelerator.device, _DTYPES[settings.mixed_precision]
    decoder = choose_decoder(settings.decoder)
    listed = list_clips(settings.data)
    clips, validation = listed.clips, None
    if settings.validate_every:
        validation, clips = choose_validation_input(settings, clips, decoder)

    parts = _load(settings, _Quiet(accelerator))
    conditioning = load_conditioning(parts, settings.checkpoint, settings.resolution)
    if validation is not None and is_sdxl(parts.unet):
        _Quiet(accelerator).say("note: no validation videos: the generate pipeline samples SD1.5-style models only")
        validation, clips = None, listed.clips
    adapter = FirstFrameAdapter(parts.unet)  # before the cast: to_q_ff copies the full-precision to_q
    _freeze(parts, conditioning, device, dtype)
    adapter.to(device)
    if settings.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    model, optimizer = accelerator.prepare(adapter, optimizer)
    start, notes = (0, []) if not settings.resume else load_checkpoint(accelerator, settings.resume, settings)
    log = _Log(accelerator, settings, start)
    processes, batch = accelerator.num_processes, settings.batch_size
    result = TrainResult(Path(settings.out), start, layers=len(adapter.layers), parameters=adapter.parameter_count,
                         samples_per_step=batch * processes * settings.gradient_accumulation, parts=parts,
                         main_process=accelerator.is_main_process)
    log.say(f"data: {listed.summary()}; clips of {settings.frames} frames at stride {settings.stride} "
            f"(span {frame_span(settings.frames, settings.stride)}), {settings.resolution}px, decoder {decoder}"
            + (f"; validation image: {validation.source}" if validation else ""))
    log.say(f"adapter: {result.layers} layers, {result.parameters:,} trainable parameters; {processes} "
            f"process(es) x batch {batch} x accumulation {settings.gradient_accumulation} = "
            f"{result.samples_per_step} samples per step" + (f"; resumed at step {start}" if settings.resume else ""))
    for note in notes:
        log.say(f"note: {note}")

    micro_batches = max(0, settings.steps - start) * settings.gradient_accumulation
    dataset = ClipSamples(clips, settings.frames, settings.stride, settings.resolution, settings.seed, decoder)
    loader = sample_loader(dataset, batch, processes, accelerator.process_index,
                           start * settings.gradient_accumulation, micro_batches, settings.workers)
    noise_scheduler = make_noise_scheduler()
    hooks = TrainingHooks(parts.unet, adapter, settings.frames)
    step, window, tick = start, [], time.perf_counter()
    try:
        with _branches_on(parts, hooks):
            for batch_data in loader:
                for path, reason in batch_data["skipped"]:
                    if path not in result.skipped:
                        result.skipped[path] = reason
                        log.say(f"skipped {path}: {reason}")
                with accelerator.accumulate(model):
                    computed = batch_loss(model, parts, conditioning, batch_data, noise_scheduler, settings.seed,
                                          settings.text_dropout, settings.image_dropout, device, dtype)
                    accelerator.backward(computed.loss)
                    if accelerator.sync_gradients and settings.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.append(computed.loss.detach())
                if not accelerator.sync_gradients:
                    continue
                step += 1
                loss = accelerator.gather(torch.stack(window).mean().reshape(1)).mean().item()
                now = time.perf_counter()
                result.step_seconds.append(now - tick)
                result.losses.append(loss)
                window, tick = [], now
                log.step(step, loss, result.samples_per_step / result.step_seconds[-1], len(result.skipped))
                if settings.save_every and (step % settings.save_every == 0 or step == settings.steps):
                    save_checkpoint(accelerator, adapter.export(), settings, step)
                if validation is not None and step % settings.validate_every == 0:
                    result.validation_videos += _validate(accelerator, parts, hooks, adapter, validation,
                                                          settings, step, log)
                    tick = time.perf_counter()  # validation time is not training time
        if accelerator.is_main_process:
            write_adapter(adapter.export(), settings.out, settings, step)
        accelerator.wait_for_everyone()
    finally:
        log.close()
    skipped = gather_object([result.skipped]) if processes > 1 else [result.skipped]
    result.skipped = {path: reason for found in skipped for path, reason in found.items()}
    return result


def _validate(accelerator, parts, hooks, adapter, validation, settings, step, log) -> list[Path]:
    written = []
    if accelerator.is_main_process:
        with _branches_off(parts, hooks):
            video = write_validation_video(parts, adapter.export(), validation, settings, step)
        log.say(f"validation video: {video}")
        written.append(video)
    accelerator.wait_for_everyone()
    return written


@contextmanager
def _branches_off(parts, hooks: TrainingHooks):
    """The pipeline's generation installs its own branch (and IP-Adapter): ours must be off meanwhile."""
    patch = parts.ip_adapter.patch if parts.ip_adapter is not None else None
    hooks.remove()
    if patch is not None:
        patch.remove()
    try:
        yield
    finally:
        if patch is not None:
            patch.install()
            parts.unet.requires_grad_(False)
        hooks.install()


class _Quiet:
    """Notes while loading, before the progress bar exists: main process only."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def say(self, text: str) -> None:
        if self.accelerator.is_main_process:
            print(text, file=sys.stderr)
