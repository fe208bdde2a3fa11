"""The seccomp filter bubblewrap applies to model-written code (`bwrap --seccomp FD`).

Namespaces, a dropped user and rlimits decide what the code can reach; this decides which of
the kernel's interfaces it may call at all. Everything a Python project, pip and pytest use
stays allowed; refused with EPERM are:
- the kernel's own controls (modules, kexec, reboot, swap, accounting, clocks, I/O ports);
- the interfaces most often behind privilege escalations (BPF, perf events, io_uring,
  userfaultfd, the keyrings, file handles, the new mount API);
- other processes' memory (ptrace, `process_vm_*`, `kcmp`, `pidfd_getfd`) and NUMA placement;
- building a sandbox of its own: new namespaces (`unshare`, `setns`, `clone`/`clone3` with a
  namespace flag), mounts and `chroot`: the code is already in its namespaces, and a user
  namespace of its own would hand it capabilities over fresh kernel code paths.
`clone3` passes its flags in memory seccomp cannot read, so it answers ENOSYS and the C library
falls back to `clone`, whose flags are checked (the way Docker's default profile does it).

The filter is compiled with libseccomp (`libseccomp.so.2`, a dependency of systemd and the
container runtimes on every Debian host) into the classic BPF program bubblewrap loads.
`infra/docker/engineer-seccomp.json`, the compose engineer's own filter, refuses the first
three groups too; it must allow namespaces, since bubblewrap builds them inside it
(`tests/engineer/test_sandbox.py` checks the lists agree).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from consumers.engineer.sandbox.port import SandboxUnavailable

KERNEL_CONTROLS = (
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime",
    "clock_adjtime64", "adjtimex", "iopl", "ioperm", "syslog", "vhangup", "quotactl",
    "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "_sysctl",
)  # fmt: skip
KERNEL_SURFACE = (
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "open_by_handle_at",
    "name_to_handle_at", "fanotify_init", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
)  # fmt: skip
OTHER_PROCESSES = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "move_pages",
    "migrate_pages", "mbind", "set_mempolicy",
)  # fmt: skip
#: Refused in the sandbox only: the compose engineer's filter must allow bubblewrap these.
SANDBOX_BUILDING = ("unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot")
REFUSED = KERNEL_CONTROLS + KERNEL_SURFACE + OTHER_PROCESSES + SANDBOX_BUILDING

_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO(code)


class _ArgCmp(ctypes.Structure):
    """libseccomp's `struct scmp_arg_cmp`."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(SandboxUnavailable):
    """libseccomp is missing or refused the filter; the message says what to install."""


def filter_fd() -> int:
    """A new file descriptor holding the filter, for one run (bubblewrap reads it to the end,
    so runs never share one); the caller passes it to bwrap and closes it."""
    fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    os.write(fd, compiled_filter())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@functools.cache
def compiled_filter() -> bytes:
    """The filter as the BPF program `bwrap --seccomp` reads (built once per process)."""
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(
            f"libseccomp is not installed ({exc}): install the Debian package `libseccomp2`; "
            "model-written code never runs without its seccomp filter"
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    context = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise SeccompUnavailable("libseccomp could not start a filter (seccomp_init failed)")
    try:

        def refuse(name: str, code: int, *conditions: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a call of this architecture (or this kernel's headers)
                return
            array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
            result = lib.seccomp_rule_add_array(
                context, _errno_action(code), number, len(conditions), array
            )
            if result != 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {result}")

        for name in REFUSED:
            refuse(name, errno.EPERM)
        # `clone` stays for threads and processes; with any namespace flag it is refused.
        for flag in _flags(_NAMESPACE_FLAGS):
            refuse("clone", errno.EPERM, _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        refuse("clone3", errno.ENOSYS)
        program = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
        try:
            if lib.seccomp_export_bpf(context, program) != 0:
                raise SeccompUnavailable("libseccomp could not export the filter")
            return os.pread(program, os.fstat(program).st_size, 0)
        finally:
            os.close(program)
    finally:
        lib.seccomp_release(context)


def _flags(mask: int) -> list[int]:
    return [1 << bit for bit in range(64) if mask >> bit & 1]
