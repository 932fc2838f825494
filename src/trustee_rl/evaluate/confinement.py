"""What a child process does to itself, first thing, before it runs text it cannot trust.

`confine(home, limits)` applies, in order:

- resource limits (kernel-enforced): CPU seconds, address space, open files, file size, no core
  dumps;
- Landlock, where the kernel has it (Linux 5.13+, no privileges needed; kernel-enforced): nothing
  outside `home` may be created, written, truncated, renamed or removed; from Landlock ABI 4 no
  TCP connect or bind anywhere; from ABI 6 no signals to, and no abstract unix sockets of,
  processes outside the sandbox;
- audit hooks (in-process, always): no sockets, new processes, signals or ctypes, no writes
  outside `home`, no reads of another process's /proc entries.

Audit hooks are a second layer only: code in the interpreter can get around them (a path relative
to a directory descriptor, interpreter internals). Where the kernel lacks Landlock they are all that
keeps writes inside `home`, so `confine` returns the layers that hold, for the caller to report.
The parent adds user and network namespaces around the child where the system allows that.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Linux syscall numbers, the same on every architecture since they were added (5.13).
_LANDLOCK_CREATE_RULESET = 444
_LANDLOCK_ADD_RULE = 445
_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Landlock's file-system rights that change the file system, by the ABI that introduced them.
_CHANGES_BY_ABI = {
    1: 1 << 1 | sum(1 << bit for bit in range(4, 13)),  # write file; remove dir/file; make any
    2: 1 << 13,  # refer (link or rename into another directory)
    3: 1 << 14,  # truncate
}
_TCP_BIND_AND_CONNECT = 0b11  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET_AND_SIGNAL = 0b11  # ABI 6

_FORBIDDEN_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
        "os.kill",
        "os.killpg",
    }
)
_FORBIDDEN_EVENT_PREFIXES = ("socket.", "ctypes.")
# Audit events that change a path, with the positions of their path arguments.
_PATH_CHANGES = {
    "os.mkdir": (0,),
    "os.rmdir": (0,),
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.link": (1,),
    "os.symlink": (1,),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


@dataclass(frozen=True)
class Limits:
    """Resource limits of one child process over its whole life."""

    cpu_s: int = 4 * 3600
    memory_bytes: int = 4 << 30
    open_files: int = 256
    file_size_bytes: int = 256 << 20


def confine(home: Path, limits: Limits) -> list[str]:
    """Confine this process to writing in `home`, under `limits`; the layers that hold."""
    limit_resources(limits)
    layers = ["resource limits"]
    abi = restrict_with_landlock(home)
    if abi:
        layers.append(f"landlock abi {abi}")
    guard_with_audit_hooks(home)  # last: Landlock needs ctypes, which the hooks refuse
    return [*layers, "audit hooks"]


def limit_resources(limits: Limits) -> None:
    # The hard CPU limit is one second above the soft one, so the kernel's SIGXCPU (which says
    # why) comes before its SIGKILL (which does not).
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    for which, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict_with_landlock(home: Path) -> int:
    """Landlock's ABI version now in force on this process, or 0 where the kernel has none."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def call(function: Any, *args: Any) -> int:
        """`function(*args)` with integers passed as C longs; a negative result raises."""
        result = int(function(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args)))
        if result < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"{function.__name__}({args[0]}, ...): {os.strerror(error)}")
        return result

    try:
        abi = call(
            libc.syscall, _LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION
        )
    except OSError:
        return 0  # not built in, or not enabled at boot
    changes = sum(bits for since, bits in _CHANGES_BY_ABI.items() if abi >= since)
    attr = _RulesetAttr(
        handled_access_fs=changes,
        handled_access_net=_TCP_BIND_AND_CONNECT if abi >= 4 else 0,
        scoped=_SCOPE_ABSTRACT_UNIX_SOCKET_AND_SIGNAL if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the fields this ABI knows
    ruleset = call(libc.syscall, _LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    try:
        home_fd = os.open(home, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = _PathBeneathAttr(allowed_access=changes, parent_fd=home_fd)
            call(
                libc.syscall, _LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0
            )
        finally:
            os.close(home_fd)
        call(libc.prctl, _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        call(libc.syscall, _LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return abi


def guard_with_audit_hooks(home: Path) -> None:
    """Refuse, from now on in this interpreter, what the module docstring lists."""
    root = os.path.realpath(home)
    own_process = str(os.getpid())

    def outside_home(path: str) -> bool:
        return os.path.commonpath([root, path]) != root

    def another_process(path: str) -> bool:
        _, top, process, *_ = (*Path(path).parts, "", "")  # "/", "proc", "<pid>", ...
        return top == "proc" and process.isdigit() and process != own_process

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in _FORBIDDEN_EVENTS or event.startswith(_FORBIDDEN_EVENT_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, _, flags = args
            if isinstance(path, int):  # wraps a descriptor already open
                return
            real = _real_path(path)
            if isinstance(flags, int) and flags & _WRITE_FLAGS and outside_home(real):
                raise PermissionError(f"sandbox: no writing outside its directory: {real}")
            if another_process(real):
                raise PermissionError(f"sandbox: no reading another process: {real}")
        elif event in _PATH_CHANGES:
            for position in _PATH_CHANGES[event]:
                real = _real_path(args[position])
                if outside_home(real):
                    raise PermissionError(f"sandbox: no changes outside its directory: {real}")

    sys.addaudithook(hook)


def _real_path(path: object) -> str:
    """The absolute path, links resolved, that `path` (a path or an open descriptor) names."""
    if isinstance(path, int):
        return os.readlink(f"/proc/self/fd/{path}")
    if isinstance(path, str | bytes | os.PathLike):
        return os.path.realpath(os.fsdecode(path))
    raise PermissionError(f"sandbox: unexpected path {path!r}")
