"""Which videos to train on, with their captions: a folder of videos (``.txt`` captions beside them), or a CSV.

CSV: a ``path`` (or ``video``/``file``) and a ``caption`` (or ``text``/``prompt``/``name``) column, found by
header name; without such a header the first column is the path and the second the caption. Relative
paths are taken from the CSV's folder. Listed files that do not exist are counted, not fatal.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".gif")
_PATH_COLUMNS = ("path", "video", "file", "filename", "video_path")
_CAPTION_COLUMNS = ("caption", "text", "prompt", "name", "description")


@dataclass(frozen=True)
class Clip:
    path: str
    caption: str


@dataclass
class ClipList:
    clips: list[Clip]
    missing: list[str] = field(default_factory=list)   # listed in a CSV but not on disk
    captioned: int = 0

    def summary(self) -> str:
        text = f"{len(self.clips)} videos, {self.captioned} with a caption"
        if self.missing:
            text += f"; {len(self.missing)} listed files missing (skipped), e.g. {self.missing[0]}"
        return text


def _caption_beside(video: Path) -> str | None:
    text_file = video.with_suffix(".txt")
    return text_file.read_text(encoding="utf-8").strip() if text_file.is_file() else None


def clips_in_folder(folder: Path) -> ClipList:
    videos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    clips, captioned = [], 0
    for video in videos:
        caption = _caption_beside(video)
        captioned += caption is not None
        clips.append(Clip(str(video), caption or ""))
    return ClipList(clips, captioned=captioned)


def _columns(header: list[str]) -> tuple[int, int] | None:
    names = [name.strip().lower() for name in header]
    path = next((names.index(n) for n in _PATH_COLUMNS if n in names), None)
    caption = next((names.index(n) for n in _CAPTION_COLUMNS if n in names), None)
    return (path, caption) if path is not None and caption is not None else None


def clips_in_csv(table: Path) -> ClipList:
    with open(table, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        return ClipList([])
    columns = _columns(rows[0])
    if columns is None:
        columns = (0, 1)
    else:
        rows = rows[1:]
    path_column, caption_column = columns
    result = ClipList([])
    for row in rows:
        if len(row) <= path_column:
            continue
        video = Path(row[path_column].strip())
        video = video if video.is_absolute() else table.parent / video
        caption = row[caption_column].strip() if len(row) > caption_column else ""
        if not video.is_file():
            result.missing.append(str(video))
            continue
        result.captioned += bool(caption)
        result.clips.append(Clip(str(video), caption))
    return result


def list_clips(source) -> ClipList:
    """The videos of ``source`` (a folder or a ``.csv`` file); a ValueError when there are none."""
    source = Path(source)
    if source.is_dir():
        found = clips_in_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        found = clips_in_csv(source)
    elif source.exists():
        raise ValueError(f"{source}: give a folder of videos or a .csv of path and caption")
    else:
        raise ValueError(f"{source}: no such folder or file")
    if not found.clips:
        raise ValueError(f"{source}: no videos found ({', '.join(VIDEO_SUFFIXES)})"
                         + (f"; {len(found.missing)} listed files are missing" if found.missing else ""))
    return found
