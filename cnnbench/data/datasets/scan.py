"""Listing trees of image files read in place (folder:PATH, catsdogs): `scan_folders` reads each file once however many
links name it, and `folder_digest` of what it found keys their prepared cache, so a changed tree is prepared again."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnnbench.data.datasets.base import DUPLICATE_LINK, NOT_AN_IMAGE, UNREADABLE, skip

# Lower-case file extensions read as images (torchvision's IMG_EXTENSIONS, kept here to avoid importing it eagerly).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class _Candidate:
    root: int  # index of the folder (a class folder) it was found under
    path: str  # as reached from that folder, through any links
    stat: os.stat_result  # of the file itself (links followed)
    via_link: bool  # reached through a symbolic link (to the file, or to a folder on its path)


@dataclass
class FolderScan:
    """The files under some folders, each file once however many names it has: see `scan_folders`."""

    files: list[list[tuple[str, os.stat_result]]]  # per folder, in os.walk's sorted top-down order
    skipped: list[dict]


def scan_folders(folders: list[Path], *, recursive: bool,
                 refuse: Callable[[str], tuple[str, str] | None]) -> FolderScan:  # fmt: skip
    """The regular files under each of `folders` (and their subfolders when `recursive`), found with os.scandir (one
    stat per entry, no image decoding, so a tree of 100,000 files takes a fraction of a second).

    Links are followed, as torchvision's ImageFolder follows them, but no file is read twice: every name of one file
    (symbolic links, hard links, the same folder reached through a link) shares its (st_dev, st_ino), and only one
    name is kept: the first reached without a symbolic link, else the first reached at all, so a link inside the tree
    never moves an image to the class (or split) of the link. A link to a file outside the tree is read once. A
    linked folder is walked once whatever links to it, which also ends link cycles. `refuse(name)` gives the
    (reason, kind) for which a file is left out before any of that, or None to keep it.
    """
    candidates: list[_Candidate] = []
    skipped: list[dict] = []
    walked: dict[tuple[int, int], str] = {}  # folder identity -> the path it was first walked at
    for index, top in enumerate(folders):
        pending = [(str(top), os.path.islink(top), os.path.islink(top))]
        while pending:
            directory, is_link, via_link = pending.pop()
            try:
                info = os.stat(directory)
            except OSError as err:
                skipped.append(skip(directory, f"cannot read this folder: {err.strerror}", UNREADABLE))
                continue
            identity = (info.st_dev, info.st_ino)
            # A folder reached by its own name is always walked (names without links cannot form cycles, and it is
            # the name its files should keep); through a link, only a folder no other name has walked yet.
            if is_link and identity in walked:
                reason = f"a link to the folder {walked[identity]}, which is read already"
                skipped.append(skip(directory, reason, DUPLICATE_LINK))
                continue
            walked.setdefault(identity, directory)
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError as err:
                skipped.append(skip(directory, f"cannot list this folder: {err.strerror}", UNREADABLE))
                continue
            subfolders = []
            for entry in entries:
                link = entry.is_symlink()
                try:
                    entry_stat = entry.stat()
                except OSError as err:
                    reason = "a broken link" if link else f"cannot read it: {err.strerror}"
                    skipped.append(skip(entry.path, reason, UNREADABLE))
                    continue
                if stat.S_ISDIR(entry_stat.st_mode):
                    subfolders.append((entry.path, link, via_link or link))
                elif not stat.S_ISREG(entry_stat.st_mode):  # a FIFO would block the decoder forever
                    skipped.append(skip(entry.path, "not a regular file", NOT_AN_IMAGE))
                elif (refusal := refuse(entry.name)) is not None:
                    skipped.append(skip(entry.path, *refusal))
                else:
                    candidates.append(_Candidate(index, entry.path, entry_stat, via_link or link))
            if recursive:
                pending.extend(reversed(subfolders))  # popped in sorted order: os.walk's top-down order
    return _one_name_per_file(candidates, skipped, len(folders))


def _one_name_per_file(candidates: list[_Candidate], skipped: list[dict], folders: int) -> FolderScan:
    chosen: dict[tuple[int, int], _Candidate] = {}
    for candidate in candidates:
        identity = (candidate.stat.st_dev, candidate.stat.st_ino)
        held = chosen.get(identity)
        if held is None or (held.via_link and not candidate.via_link):
            chosen[identity] = candidate
    files: list[list[tuple[str, os.stat_result]]] = [[] for _ in range(folders)]
    for candidate in candidates:
        kept = chosen[(candidate.stat.st_dev, candidate.stat.st_ino)]
        if kept is candidate:
            files[candidate.root].append((candidate.path, candidate.stat))
        else:
            skipped.append(skip(candidate.path, f"the same file as {kept.path}, which is read", DUPLICATE_LINK))
    return FolderScan(files=files, skipped=skipped)


def folder_digest(base: Path, scan: FolderScan, classes: list[str]) -> str:
    """A digest of what a scan found: every kept file's path (relative to `base`), size and modification time, and
    every file left out for a reason other than not being an image, so that adding, removing or replacing an image
    changes it. Files that are not images (.DS_Store, notes) stay out of it: they change often and matter not."""
    lines = ["\t".join(classes)]
    for files in scan.files:
        lines += [f"{os.path.relpath(path, base)}\t{info.st_size}\t{info.st_mtime_ns}" for path, info in files]
    lines += [f"{os.path.relpath(s['path'], base)}\t{s['kind']}" for s in scan.skipped if s["kind"] != NOT_AN_IMAGE]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()

