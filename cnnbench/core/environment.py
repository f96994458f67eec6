"""Facts about where a run happened, recorded in every config.json so results say what they were measured on."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("cnnbench", "torch", "torchvision", "numpy", "scikit-learn", "pandas"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    """The commit of the cnnbench checkout in use, with '+dirty' when it has uncommitted changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)  # fmt: skip
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": device.type, "name": platform.processor() or platform.machine(),
                            "threads": torch.get_num_threads()}  # fmt: skip
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    return info


@functools.cache  # the CPU does not change under a running process
def cpu_info() -> tuple[str, frozenset[str]]:
    """(CPU model name, instruction-set flags) from /proc/cpuinfo; elsewhere platform's description and no flags."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first core's line: all cores of one machine match
    name = fields.get("model name") or fields.get("Hardware")
    if not name and "CPU part" in fields:  # Arm kernels name the core by implementer and part numbers
        name = f"implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    flags = fields.get("flags") or fields.get("Features") or ""
    return name or platform.processor() or platform.machine(), frozenset(flags.split())
