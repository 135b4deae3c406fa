"""Transparent huge pages for XLA's CPU buffers: a command re-executes itself once with glibc's ``hugetlb`` tunable.

On every call an XLA CPU program takes its temporary buffer from ``malloc`` (537 MiB for the default interactive
training step). A buffer that large is a fresh ``mmap`` each time, which the kernel zeroes and maps on first touch
in 4 KiB pages: 138,000 page faults and 0.30 of the step's 1.3 CPU-seconds, measured. glibc's
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) asks for transparent huge pages on those mappings: ~600 faults, 0.08
CPU-seconds, the step 0.73 -> 0.59 s on 2 cores. glibc reads tunables only at process start, so the commands
(``train.py``, ``eval.py``, ``python -m bench``, ``python -m samjax.segment``, ...) call :func:`reexec` first
thing; it replaces the process with the same command line and the tunable added, once. ``SAMJAX_HUGE_PAGES=0``
turns it off (a debugger, or a machine where huge pages cost more than they save).
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "SAMJAX_HUGE_PAGES"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_supports() -> bool:
    name, version = platform.libc_ver()
    try:
        return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def _thp_available(path: str = THP_MODE) -> bool:
    """The kernel's THP mode is ``[always]`` or ``[madvise]`` (``[never]``: the tunable would do nothing)."""
    try:
        with open(path) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) with :data:`TUNABLE` added to ``GLIBC_TUNABLES`` (colon-separated)."""
    env = dict(os.environ if environ is None else environ)
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append(TUNABLE)
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def needed(environ: dict[str, str] | None = None) -> bool:
    """True when this process would gain from :func:`reexec`: Linux, glibc >= 2.35, THP not off, the tunable
    not set yet (by the user or by an earlier re-execution) and ``SAMJAX_HUGE_PAGES`` not ``0``."""
    env = os.environ if environ is None else environ
    if env.get(SWITCH, "1") == "0" or "glibc.malloc.hugetlb=" in env.get("GLIBC_TUNABLES", ""):
        return False
    return sys.platform.startswith("linux") and _glibc_supports() and _thp_available()


def reexec() -> None:
    """Replace this process by the same command with :data:`TUNABLE` set (see the module docstring); a no-op
    where :func:`needed` is False. Call it before any work: nothing done before it survives."""
    if not needed():
        return
    env = environment()
    env[SWITCH] = "0"  # never twice, whatever the command does with GLIBC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
