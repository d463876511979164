"""The bubblewrap command line of one sandboxed kernel, and the limits it sets."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

SOCKETS = "/run/kernel"
DATA = "/mnt/data"


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use."""

    memory_bytes: int = 2_000_000_000
    processes: int = 64
    file_bytes: int = 100_000_000
    disk_bytes: int = 500_000_000
    tmp_bytes: int = 100_000_000
    threads_per_library: int = 1


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def interpreter_paths(python: str) -> list[str]:
    """Directories the interpreter needs: its environment, its base installation, its target."""
    dirs = {sys.prefix, sys.base_prefix, str(Path(os.path.realpath(python)).parent.parent)}
    if Path(python).parent.parent != Path(sys.prefix):
        dirs.add(str(Path(python).parent.parent))
    return sorted(d for d in dirs if not d.startswith("/usr") and d != "/")


def command(python: str, limits: Limits, conn_fd: int, info_fd: int, uid: int | None) -> list[str]:
    """The bubblewrap command line that starts a kernel on the connection file in `conn_fd`.

    `uid` is the host user the kernel runs as when the executor is root (None otherwise).
    """
    argv = [
        "bwrap", "--die-with-parent", "--new-session",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        "--perms", "0755", "--dir", "/etc",
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
        "--ro-bind-try", "/etc/fonts", "/etc/fonts",
        "--proc", "/proc", "--dev", "/dev",
    ]  # fmt: skip
    # /tmp first: a tmpfs mounted after a bind beneath it (a venv in /tmp) would hide the bind.
    argv += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    made: set[str] = set()
    for path in interpreter_paths(python):
        for parent in _ancestors(path):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", path, path]
    argv += [
        "--perms", "1777", "--size", str(1 << 20), "--tmpfs", SOCKETS,
        "--perms", "0444", "--ro-bind-data", str(conn_fd), f"{SOCKETS}/kernel.json",
        "--perms", "1777", "--size", str(limits.disk_bytes), "--tmpfs", DATA,
        "--chdir", DATA,
        "--clearenv",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
        "--info-fd", str(info_fd),
    ]  # fmt: skip
    threads = str(limits.threads_per_library)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        argv += ["--setenv", name, threads]
    if uid is not None:
        argv += [
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
    else:
        argv[1:1] = ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    argv += [
        "prlimit", f"--as={limits.memory_bytes}", f"--nproc={limits.processes}",
        f"--fsize={limits.file_bytes}", "--core=0", "--",
        python, "-m", "ipykernel_launcher", "-f", f"{SOCKETS}/kernel.json",
        "--IPKernelApp.parent_handle=0", "--HistoryManager.enabled=False",
    ]  # fmt: skip
    return argv
