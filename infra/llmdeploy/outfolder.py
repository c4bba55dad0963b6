"""The folder `llmdeploy render --out` writes into: what an earlier render wrote there is replaced, never mixed
with this render's files, and a folder llmdeploy did not write is left alone.

Each render lists the files it wrote in MANIFEST; the next render into the same folder removes exactly those
(another stack's files included) before it writes. A folder that holds anything without a manifest is refused:
it may be the user's own, and deleting a stranger's files is worse than asking for another folder.
"""
from __future__ import annotations

from pathlib import Path

from .errors import UsageError

MANIFEST = ".llmdeploy-rendered"


def _refuse_a_file_in_the_way(out: Path, label: str) -> None:
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise UsageError(f"{label}: {folder} is a file, not a folder; choose another --out (or move the file "
                                 "away)")
            return


def clear_previous(out: Path, given: bool = True) -> set[str]:
    """Remove the files an earlier render listed in out's manifest; their paths relative to out. UsageError for a
    path blocked by a file, or a non-empty folder no render wrote. `given`: out came from --out (else the
    default folder), for the message."""
    label = f"--out {out}" if given else f"the default output folder {out}"
    _refuse_a_file_in_the_way(out, label)
    if not out.is_dir():
        return set()
    manifest = out / MANIFEST
    if not manifest.is_file():
        if any(out.iterdir()):
            raise UsageError(f"{label} is not empty and llmdeploy render did not write it (no {MANIFEST}: yours, "
                             "or a render from before llmdeploy kept one); empty it or choose a new folder with "
                             "--out, so that nothing of yours is overwritten or deleted")
        return set()
    root = out.resolve()
    removed: set[str] = set()
    folders: set[Path] = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        path = out / line
        # Only regular files inside out: a hand-edited manifest must not reach outside it.
        if line and root in path.resolve().parents and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.add(line)
            folders.update(p for p in path.parents if root in p.resolve().parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    manifest.unlink()
    return removed


def write_manifest(out: Path, written: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text("".join(f"{p.relative_to(out)}\n" for p in written), encoding="utf-8")
