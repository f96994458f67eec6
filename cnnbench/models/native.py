"""Kernels in C++ for the layers whose PyTorch CPU kernels are slow at the zoo's shapes, compiled on first use.

The source (plain C++, no PyTorch headers: a second or two to compile) lives beside this file. It is built with the
machine's C++ compiler (`$CXX`, which may name a launcher too, as in `ccache g++`; else c++, g++ or clang++) for this
CPU and kept in `~/.cache/cnnbench/native/` (`$CNNBENCH_CACHE` moves it) under a name that digests the source, the
compiler command and the CPU, so a changed source, compiler or host builds afresh. This is how PyTorch's own
`torch.compile` works on a CPU: C++ compiled at run time by the system compiler, cached by content.

Without a compiler, where the build fails, or with `CNNBENCH_NATIVE=0`, `kernels()` is None and the layers use PyTorch's
kernels: the same results, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from cnnbench.core.environment import cpu_info
from cnnbench.core.storage import cache_folder, write_atomic

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("max_pool.cpp")
# -march=native: the host's vector instructions (the cache name holds the CPU, so another host builds its own).
# -mno-avx512f (x86 only): gcc's AVX-512 code for these loops uses masked loads and stores, measured 2-5x slower than
# its AVX2 code on an AMD EPYC with AVX-512; the loops are bound by memory, which 256-bit vectors keep up with.
# -fopenmp: PyTorch's own OpenMP runtime (already loaded, same soname) runs the threads, as many as torch uses.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
X86_FLAGS = ["-mno-avx512f"]
_VOID, _INT64 = ctypes.c_void_p, ctypes.c_int64
ENTRY_POINTS = ("max_pool2x2_forward_bf16", "max_pool2x2_forward_f32", "max_pool2x2_backward_16",
                "max_pool2x2_backward_32")  # fmt: skip


def enabled() -> bool:
    return os.environ.get("CNNBENCH_NATIVE", "1") != "0"


@functools.cache  # one build or load per process; a failure is not retried at every layer call
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, built now if this machine has none cached; None where they cannot be had."""
    if not enabled():
        return None
    compiler = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None:
        log.info("no C++ compiler found: PyTorch's pooling kernels are used (slower on a CPU)")
        return None
    library = cache_folder() / "native" / f"max_pool-{_digest(compiler)}.so"
    try:
        if not library.exists():
            _build(compiler, library)
        try:
            lib = ctypes.CDLL(str(library))
        except OSError:  # damaged in the cache (it is written whole, but disks and people err): build it again
            _build(compiler, library)
            lib = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("cnnbench's C++ pooling kernel could not be built or loaded (%s): PyTorch's kernels are used",
                    str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__)  # fmt: skip
        return None
    for name in ENTRY_POINTS:
        function = getattr(lib, name)
        function.argtypes = [_VOID, _VOID, _VOID, _INT64, _INT64, _INT64, _INT64, ctypes.c_int]
        function.restype = None
    return lib


def _digest(compiler: str) -> str:
    name, flags = cpu_info()
    key = [SOURCE.read_bytes(), compiler.encode(), " ".join(_flags()).encode(), name.encode(),
           " ".join(sorted(flags)).encode()]  # fmt: skip
    return hashlib.sha256(b"\0".join(key)).hexdigest()[:16]


def _flags() -> list[str]:
    return FLAGS + X86_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else FLAGS


def _build(compiler: str, library: Path) -> None:
    """Compile into a scratch folder, then move the library into the cache atomically: processes that build at the
    same time each write a whole file, and a build that fails or is interrupted leaves nothing behind."""
    with tempfile.TemporaryDirectory(prefix="cnnbench-native-") as scratch:
        built = Path(scratch) / library.name
        command = [*shlex.split(compiler), *_flags(), str(SOURCE), "-o", str(built)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise OSError(f"{compiler} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        write_atomic(library, lambda handle: handle.write(built.read_bytes()))
