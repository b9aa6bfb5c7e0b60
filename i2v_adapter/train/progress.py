"""What a run tells the user: notes on stderr, a progress bar with loss and samples/s, ``log.jsonl`` per step."""
from __future__ import annotations

import json
import sys

from .settings import TrainSettings


def say(accelerator, text: str) -> None:
    """A note from the main process, on stderr (stdout keeps the one result line)."""
    if accelerator.is_main_process:
        print(text, file=sys.stderr)


class RunLog:
    """Progress bar and a JSON line per step beside the checkpoints; silent on the other processes."""

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
        if self.main:
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
