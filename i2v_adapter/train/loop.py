"""The training run: one process, or one of many under ``accelerate launch`` (DDP or any accelerate config).

Frozen: base UNet, motion module, VAE, text encoder(s) (and IP-Adapter). Learning: the adapter only, fp32,
AdamW at a constant rate. Frozen parts run in the mixed-precision dtype (the VAE stays fp32).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..pipeline.text_conditioning import TextConditioning
from .checkpoints import load_checkpoint, save_checkpoint, write_adapter
from .clips import ClipList, list_clips
from .data import ClipSamples, require_a_usable_clip, sample_loader
from .decode import choose_decoder, frame_span
from .frozen import branches_off, branches_on, freeze, load_frozen
from .progress import RunLog, say
from .recipe.model import FirstFrameAdapter, TrainingHooks
from .recipe.objective import make_noise_scheduler
from .settings import TrainSettings
from .step import batch_loss
from .validation import ValidationInput, choose_validation_input, write_validation_video

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
    peak_memory_bytes: int | None = None     # CUDA only: the most this process allocated while training

    @property
    def samples_per_second(self) -> float:
        """Over the run without its first step (which includes start-up and worker spawn)."""
        timed = self.step_seconds[1:] or self.step_seconds
        return self.samples_per_step * len(timed) / sum(timed) if timed and sum(timed) > 0 else 0.0


@dataclass
class _Run:
    settings: TrainSettings
    accelerator: object
    parts: object
    conditioning: object
    adapter: FirstFrameAdapter
    model: object                            # the adapter as accelerate prepared it (DDP-wrapped or not)
    optimizer: object
    hooks: TrainingHooks
    validation: ValidationInput | None
    dtype: torch.dtype


def _prepare(settings: TrainSettings, accelerator, listed: ClipList, decoder: str):
    """Models, adapter, optimizer and validation input: ``(run, clips to train on)``."""
    clips, validation = listed.clips, None
    if settings.validate_every:
        validation, clips = choose_validation_input(settings, clips, decoder)
    notes: list[str] = []
    parts = load_frozen(settings, notes)
    conditioning = TextConditioning.of_parts(parts, (settings.resolution, settings.resolution))
    for note in notes:
        say(accelerator, f"note: {note}")
    adapter = FirstFrameAdapter(parts.unet)  # before the cast: to_q_ff copies the full-precision to_q
    dtype = _DTYPES[settings.mixed_precision]
    freeze(parts, conditioning, accelerator.device, dtype)
    adapter.to(accelerator.device)
    if settings.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    model, optimizer = accelerator.prepare(adapter, optimizer)
    hooks = TrainingHooks(parts.unet, adapter, settings.frames)
    run = _Run(settings, accelerator, parts, conditioning, adapter, model, optimizer, hooks, validation, dtype)
    return run, clips


def _introduce(log: RunLog, run: _Run, listed: ClipList, decoder: str, result: TrainResult, notes: list[str]):
    settings = run.settings
    log.say(f"data: {listed.summary()}; clips of {settings.frames} frames at stride {settings.stride} "
            f"(span {frame_span(settings.frames, settings.stride)}), {settings.resolution}px, decoder {decoder}"
            + (f"; validation image: {run.validation.source}" if run.validation else ""))
    log.say(f"adapter: {result.layers} layers, {result.parameters:,} trainable parameters; "
            f"{run.accelerator.num_processes} process(es) x batch {settings.batch_size} x accumulation "
            f"{settings.gradient_accumulation} = {result.samples_per_step} samples per step"
            + (f"; resumed at step {result.first_step}" if settings.resume else ""))
    for note in notes:
        log.say(f"note: {note}")


def _micro_step(run: _Run, batch: dict, noise_scheduler) -> torch.Tensor:
    settings, accelerator = run.settings, run.accelerator
    with accelerator.accumulate(run.model):
        computed = batch_loss(run.model, run.parts, run.conditioning, batch, noise_scheduler, settings.seed,
                              settings.text_dropout, settings.image_dropout, accelerator.device, run.dtype)
        accelerator.backward(computed.loss)
        if accelerator.sync_gradients and settings.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), settings.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return computed.loss.detach()


def _after_step(run: _Run, step: int, log: RunLog, result: TrainResult) -> None:
    """Checkpoint and validation video when due."""
    settings = run.settings
    if settings.save_every and (step % settings.save_every == 0 or step == settings.steps):
        save_checkpoint(run.accelerator, run.adapter.export(), settings, step)
    if run.validation is not None and step % settings.validate_every == 0:
        if run.accelerator.is_main_process:
            with branches_off(run.parts, run.hooks):
                video = write_validation_video(run.parts, run.adapter.export(), run.validation, settings, step)
            log.say(f"validation video: {video}")
            result.validation_videos.append(video)
        run.accelerator.wait_for_everyone()


def _record_skipped(batch: dict, log: RunLog, result: TrainResult) -> None:
    for path, reason in batch["skipped"]:
        if path not in result.skipped:
            result.skipped[path] = reason
            log.say(f"skipped {path}: {reason}")


def _train_steps(run: _Run, loader, start: int, log: RunLog, result: TrainResult) -> int:
    """The loop over micro-batches; returns the last optimizer step."""
    accelerator, noise_scheduler = run.accelerator, make_noise_scheduler(run.parts.betas)
    step, window, tick = start, [], time.perf_counter()
    for batch in loader:
        _record_skipped(batch, log, result)
        window.append(_micro_step(run, batch, noise_scheduler))
        if not accelerator.sync_gradients:
            continue
        step += 1
        loss = accelerator.gather(torch.stack(window).mean().reshape(1)).mean().item()
        now = time.perf_counter()
        result.step_seconds.append(now - tick)
        result.losses.append(loss)
        log.step(step, loss, result.samples_per_step / result.step_seconds[-1], len(result.skipped))
        _after_step(run, step, log, result)
        window, tick = [], time.perf_counter()  # checkpoint and validation time is not training time
    return step


def _runs_on_the_cpu() -> bool:
    """What accelerate will pick, asked without creating its process state (the launch's first call does that)."""
    from accelerate.utils import parse_flag_from_env

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, MPS, XPU, ...
    available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not available


def train(settings: TrainSettings) -> TrainResult:
    """Run (or resume) training and write ``settings.out``; every process of a launch calls this."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    if settings.mixed_precision == "fp16" and _runs_on_the_cpu():
        # no fp16 autocast there: the fp16 weights would meet fp32 inputs and fail deep inside torch
        raise ValueError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")
    accelerator = Accelerator(mixed_precision=settings.mixed_precision,
                              gradient_accumulation_steps=settings.gradient_accumulation)
    decoder = choose_decoder(settings.decoder)
    listed = list_clips(settings.data)
    require_a_usable_clip(listed.clips, settings.frames, settings.stride, settings.resolution, decoder)
    run, clips = _prepare(settings, accelerator, listed, decoder)
    start, notes = (0, []) if not settings.resume else load_checkpoint(accelerator, settings.resume, settings)
    processes, accumulation = accelerator.num_processes, settings.gradient_accumulation
    result = TrainResult(Path(settings.out), start, layers=len(run.adapter.layers),
                         parameters=run.adapter.parameter_count, parts=run.parts,
                         samples_per_step=settings.batch_size * processes * accumulation,
                         main_process=accelerator.is_main_process)
    dataset = ClipSamples(clips, settings.frames, settings.stride, settings.resolution, settings.seed, decoder)
    loader = sample_loader(dataset, settings.batch_size, processes, accelerator.process_index, start * accumulation,
                           max(0, settings.steps - start) * accumulation, settings.workers)
    log = RunLog(accelerator, settings, start)
    try:
        _introduce(log, run, listed, decoder, result, notes)
        cuda = accelerator.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(accelerator.device)
        with branches_on(run.parts, run.hooks):
            step = _train_steps(run, loader, start, log, result)
        if cuda:
            result.peak_memory_bytes = torch.cuda.max_memory_allocated(accelerator.device)
        if accelerator.is_main_process:
            write_adapter(run.adapter.export(), settings.out, settings, step)
        accelerator.wait_for_everyone()
    finally:
        log.close()
    found = gather_object([result.skipped]) if processes > 1 else [result.skipped]
    result.skipped = {path: reason for skipped in found for path, reason in skipped.items()}
    return result
