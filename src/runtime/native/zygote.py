# pyward's warm-path zygote: a trusted, fixed script (shipped with pyward and
# run with `python3 -s -c`) that never runs untrusted code itself.
#
# It runs inside a native sandbox (user, pid, mount, ipc, uts, net namespaces,
# the sealed read-only root) as root of its user namespace, with its
# capabilities and without seccomp. It imports the configured modules, says
# "R" on its control socket (fd 0) and then, per b"F" message carrying four
# fds (call socket, stdin, stdout, stderr; b"FO" adds a memfd for the output
# files), forks:
#
#   zygote ─unshare(NEWPID), fork, setns back─▶
#              stub: pid 1 of the call's pid namespace; unshares mount,
#                  ipc, uts and net namespaces (or joins a reused net one),
#                  tells pyward its pid (SCM_CREDENTIALS), waits to be moved
#                  into the call's cgroup, reads the call's request from the
#                  call socket, unshares the cgroup namespace, forks the payload,
#                  reaps, writes the declared output files into the memfd,
#                  reports usage and status, exits (killing the rest)
#              ─▶ payload: fresh /proc, /tmp and work dir, the call's files,
#                  rlimits, the sandbox uid, no capabilities, no_new_privs,
#                  seccomp, the call's stdio, environment and a clean
#                  __main__; then the program.
#
# The zygote itself never reads a request: only its forks do, so nothing of
# one call is in the memory the next call's fork copies.
import ctypes, errno, fcntl, gc, json, os, resource, signal, socket, stat, struct, sys, types

# What pyward's plan decides: the step numbers of its status messages
# (runtime/native/status.rs), the /proc paths each call covers
# (runtime/native/plan.rs, PROC_COVERS) and the Landlock rules each call
# restricts itself to (plan.rs, LandlockPlan; null without Landlock); then
# the modules to preload.
_PLAN = json.loads(sys.argv[1])
# A /proc path this kernel lacks is absent from every call's /proc too:
# looked for once here, not per call.
STEPS = _PLAN["steps"]
PROC_COVERS = [(p.encode(), how) for p, how in _PLAN["proc_covers"] if os.path.lexists(p)]
LANDLOCK = _PLAN["landlock"]
for _module in sys.argv[2:]:
    __import__(_module)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x20000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 0x20, 0x1000, 0x4000
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 24, 38, 22
SECCOMP_MODE_FILTER = 2
# Landlock's syscalls (the same numbers on x86_64 and aarch64) and rule type.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}[os.uname().machine]
LAST_CAP = int(open("/proc/sys/kernel/cap_last_cap").read())
# Message kinds of pyward's status channel (runtime/native/status.rs).
SETUP_FAILED, EXITED, SIGNALED, USAGE = 1, 2, 3, 4
# Record kinds of the output files (runtime/output_files.rs), and openat2's
# number (the same on x86_64 and aarch64) and resolve flags: beneath the
# work dir, no symbolic or magic link, no mount crossed.
COLLECTED, MISSING, NOT_REGULAR, NOT_COLLECTED = 1, 2, 3, 4
SYS_OPENAT2 = 437
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 1, 2, 4, 8
# The fds each fork message carries: call socket, stdin, stdout, stderr,
# then the output files' memfd ("O"), then a network namespace ("N").
FORK_MESSAGES = {b"F": 4, b"FO": 5, b"N": 5, b"NO": 6}
ZYGOTE_ENV = dict(os.environ)


class SetupError(Exception):
    def __init__(self, step, err):
        self.step, self.err = step, err


def _check(ret, step):
    if ret < 0:
        raise SetupError(step, ctypes.get_errno())


def _message(kind, a, b, c=0):
    return struct.pack("=IIqQ", kind, a, b, c)


def zygote():
    ctl = socket.socket(fileno=os.dup(0))
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    # The calls' pid 1s are not waited for: the kernel reaps them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    _warm_up()
    # Everything imported so far stays out of the collector's way: a
    # collection in a fork would otherwise write to (and so copy) every page
    # holding a tracked object.
    gc.collect()
    gc.freeze()
    ctl.sendall(b"R")
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 16, 8)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        # b"F": call socket, stdin, stdout, stderr; b"N": the same and a
        # network namespace of an earlier call (whose processes are all gone);
        # "O" after either: the output files' memfd before the namespace.
        if FORK_MESSAGES.get(msg) != len(fds):
            for fd in fds:
                os.close(fd)
            continue
        pid = _fork_into_new_pid_namespace(own_pid_ns)
        if pid == 0:
            ctl.close()
            os.close(own_pid_ns)
            files = fds[4] if msg.endswith(b"O") else None
            netns = fds[-1] if msg.startswith(b"N") else None
            return stub(*fds[:4], files=files, netns=netns)
        for fd in fds:
            os.close(fd)


# A program touching the compiler's common paths; compiled (never run) once
# in the zygote.
_WARM_UP_SOURCE = """
import os, sys
from collections import namedtuple as _nt
@staticmethod
def f(a, *args, b=1, **kw):
    try:
        with open(a) as g:
            return [x for x in g if x], {k: v for k, v in kw.items()}, f"{a!r:>3}"
    except (OSError, ValueError) as e:
        raise RuntimeError(e) from None
    finally:
        pass
class C(object):
    x: int = 0
    async def g(self):
        await self.h()
        yield lambda y: y ** 2 if y else -y
while False:
    del f
"""


def _warm_up():
    """Does once, in the zygote, what every call would otherwise redo after
    its fork: the compiler's first use (lazy initialisation in the parser,
    about 0.5 ms) and importing threading, which interpreter shutdown needs
    (about 0.8 ms)."""
    import threading  # noqa: F401
    compile(_WARM_UP_SOURCE, "<pyward-warm-up>", "exec")


def _fork_into_new_pid_namespace(own_pid_ns):
    """Forks the call's pid 1; -1 when that fails (the call then sees its
    socket close: a sandbox error)."""
    if _libc.unshare(CLONE_NEWPID) < 0:
        return -1
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid != 0 and _libc.setns(own_pid_ns, CLONE_NEWPID) < 0:
        # Our next child would land in this call's namespace, or nowhere:
        # better to end and be restarted.
        os._exit(1)
    return pid


def _read_exact(call, n):
    chunks = []
    while n:
        chunk = call.recv(min(n, 1 << 20))
        if not chunk:
            os._exit(1)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def stub(call_fd, stdin, stdout, stderr, files=None, netns=None):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in (0, 1, 2):
        os.close(fd)
    stdio = (stdin, stdout, stderr)
    call = socket.socket(fileno=call_fd)
    steps = STEPS
    # The call's own mount, ipc, uts and network namespaces (the payload
    # inherits them; the pid namespace is already the call's). A network
    # namespace pyward hands back is reused (tearing one down costs the
    # kernel more than making it); a new one goes to pyward for later calls.
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    if _libc.unshare(flags | (CLONE_NEWNET if netns is None else 0)) < 0 or (
        netns is not None and _libc.setns(netns, CLONE_NEWNET) < 0
    ):
        call.sendall(_message(SETUP_FAILED, steps["unshare"], ctypes.get_errno()))
        os._exit(1)
    if netns is None:
        netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        socket.send_fds(call, [b"P"], [netns])
    else:
        call.sendall(b"P")
    os.close(netns)
    # pyward moves us into the call's cgroup (it read our pid from the
    # credentials of the "P" above); wait until it has.
    if call.recv(1) != b"G":
        os._exit(1)
    # Only now the request: its files count against the call's memory limit.
    (size,) = struct.unpack("=I", _read_exact(call, 4))
    req = json.loads(_read_exact(call, size))
    blobs = _read_exact(call, req["blob_bytes"])
    try:
        _check(_libc.unshare(CLONE_NEWCGROUP), steps["unshare_cgroup"])
        payload = os.fork()
    except (SetupError, OSError) as e:
        step, err = (e.step, e.err) if isinstance(e, SetupError) else (steps["fork"], e.errno)
        call.sendall(_message(SETUP_FAILED, step, err))
        os._exit(1)
    if payload == 0:
        return run_payload(call, req, blobs, stdio)
    for fd in stdio:
        os.close(fd)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == payload:
            break
    # The declared output files, before pyward hears that the program ended.
    if files is not None:
        collect_outputs(req, files)
    cpu = round((usage.ru_utime + usage.ru_stime) * 1e6)
    report = _message(USAGE, 0, cpu, usage.ru_maxrss * 1024)
    if os.WIFSIGNALED(status):
        report += _message(SIGNALED, 0, os.WTERMSIG(status))
    else:
        report += _message(EXITED, 0, os.WEXITSTATUS(status))
    try:
        call.sendall(report)
    finally:
        # pid 1 exiting makes the kernel kill whatever the program left behind.
        os._exit(0)


def _record(kind, size=0, kept=0):
    return struct.pack("<IIQQ", kind, 0, size, kept)


def collect_outputs(req, out):
    """Writes one record per declared output file into `out`, as the native
    runtime's stub does (runtime/native/outputs.rs): each path is opened
    beneath the work dir with openat2, never through a symbolic link, never
    blocking (O_NONBLOCK), and only a regular file is read, up to the caps."""
    left = req["output_total"]
    try:
        work = os.open(req["work_dir"], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        work = None
    try:
        for path in req["outputs"]:
            if work is None:
                _write_all(out, _record(NOT_COLLECTED))
            else:
                left -= _collect_one(work, path, min(req["output_cap"], left), out)
    except OSError:
        pass  # the paths not written come back not_collected
    finally:
        if work is not None:
            os.close(work)


def _collect_one(work, path, room, out):
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC
    resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
    how = struct.pack("=QQQ", flags, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_long(work), path.encode(), how, ctypes.c_long(len(how)))
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            kind = MISSING
        elif err in (errno.ELOOP, errno.ENXIO, errno.EXDEV, errno.EACCES):
            kind = NOT_REGULAR
        else:
            kind = NOT_COLLECTED
        _write_all(out, _record(kind))
        return 0
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):
            _write_all(out, _record(NOT_REGULAR))
            return 0
        at = os.lseek(out, 0, os.SEEK_CUR)
        _write_all(out, _record(COLLECTED, size, 0))
        kept = 0
        while kept < room:
            try:
                n = os.sendfile(out, fd, None, room - kept)
            except OSError:
                break
            if n == 0:
                break
            kept += n
        size = max(size, os.fstat(fd).st_size, kept)
        os.pwrite(out, _record(COLLECTED, size, kept), at)
        return kept
    finally:
        os.close(fd)


def run_payload(call, req, blobs, stdio):
    try:
        setup_payload(call.fileno(), req, blobs, stdio)
    except SetupError as e:
        call.sendall(_message(SETUP_FAILED, e.step, e.err))
        os._exit(127)
    except OSError as e:
        call.sendall(_message(SETUP_FAILED, STEPS["warm"], e.errno or 0))
        os._exit(127)
    call.close()
    return req


def _os_step(step, fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise SetupError(step, e.errno or 0)


def setup_payload(call_fd, req, blobs, stdio):
    steps = STEPS
    # The call's stdin, stdout and stderr.
    for target, fd in enumerate(stdio):
        _os_step(steps["stdio"], os.dup2, fd, target)
        os.close(fd)
    # A /proc of the call's pid namespace, over the zygote's (the kernel lets
    # a user namespace mount proc only where a full proc is already mounted).
    hardened = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(b"proc", b"/proc", b"proc", hardened, None), steps["proc"])
    # What runc covers, over the fresh /proc (the zygote's own covers are under it).
    for path, how in PROC_COVERS:
        _cover_proc_path(path, how, hardened, steps["proc_covers"])
    # Fresh /tmp and work dir, over the zygote's (empty: it never writes
    # there). Not detaching them spares an RCU grace period per call.
    for path, options, step in (
        (b"/tmp", req["tmp_options"].encode(), steps["tmp"]),
        (req["work_dir"].encode(), req["work_options"].encode(), steps["work"]),
    ):
        _check(_libc.mount(b"tmpfs", path, b"tmpfs", hardened, options), step)
    # The program and its input files.
    offset = 0
    for d in req["dirs"]:
        _os_step(steps["work_files"], os.mkdir, d, 0o755)
    for path, size in req["files"]:
        fd = _os_step(steps["work_files"], os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        _os_step(steps["work_files"], _write_all, fd, blobs[offset:offset + size])
        os.close(fd)
        offset += size
    if req["loopback"]:
        _os_step(steps["warm"], _loopback_up)
    _os_step(steps["warm"], os.chdir, req["work_dir"])
    # rlimits: no core dumps, open files, file size, CPU seconds.
    for res, soft, hard in req["rlimits"]:
        _os_step(steps["rlimits"], resource.setrlimit, res, (soft, hard))
    # The bounding set, while we still have CAP_SETPCAP.
    for cap in range(LAST_CAP + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), steps["bounding"])
    # The unprivileged sandbox user, with no supplementary groups.
    uid, gid = req["uid"], req["gid"]
    _os_step(steps["user"], os.setgroups, [])
    _os_step(steps["user"], os.setresgid, gid, gid, gid)
    _os_step(steps["user"], os.setresuid, uid, uid, uid)
    # Dumpable again, as the cold path's exec of the interpreter makes it: the
    # change of user cleared it, which would leave /proc/self owned by root.
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), steps["user"])
    # Nothing left in the inheritable, permitted or effective sets (the
    # switch of user cleared ambient, permitted and effective already).
    header = struct.pack("=Ii", 0x20080522, 0)
    data = ctypes.create_string_buffer(24)
    _check(_libc.syscall(SYS_CAPSET, ctypes.c_char_p(header), data), steps["caps"])
    # Only stdin, stdout, stderr and the call socket (closed below).
    _os_step(steps["close_fds"], os.closerange, 3, call_fd)
    _os_step(steps["close_fds"], os.closerange, call_fd + 1, 1 << 20)
    # Default signal mask, as a fresh process has.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # no_new_privs, then Landlock and the seccomp filters.
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), steps["nnp"])
    # Landlock: read anywhere, write only in /tmp, the work dir and /dev's nodes.
    if LANDLOCK is not None:
        _landlock_restrict_self(LANDLOCK, steps["landlock"])
    for start, length in req["seccomp"]:
        program = blobs[start:start + length]
        buf = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(buf))
        fbuf = ctypes.create_string_buffer(fprog, len(fprog))
        _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0), steps["seccomp"])


def _cover_proc_path(path, how, hardened, step):
    if how == "read_only":
        ret = _libc.mount(path, path, None, MS_BIND | MS_REC, None)
        if ret == 0:
            ret = _libc.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | hardened, None)
    elif how == "mask_file":
        ret = _libc.mount(b"/dev/null", path, None, MS_BIND, None)
    else:
        ret = _libc.mount(b"tmpfs", path, b"tmpfs", MS_RDONLY | hardened, b"size=4k,nr_inodes=1")
    # A path this kernel does not have is left alone.
    if ret < 0 and ctypes.get_errno() != errno.ENOENT:
        raise SetupError(step, ctypes.get_errno())


def _landlock_restrict_self(plan, step):
    attr = struct.pack("=QQQ", plan["handled_fs"], 0, plan["scoped"])
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    _check(ruleset, step)
    try:
        for path, access in plan["rules"]:
            fd = _os_step(step, os.open, path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("=Qi", access, fd)
                _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0), step)
            finally:
                os.close(fd)
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), step)
    finally:
        os.close(ruleset)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", 0x1 | 0x40))


def run_program(req):
    """Runs the call's program as `python3 -s -c CODE` or `python3 -s FILE` would."""
    os.environ.clear()
    os.environ.update(req["env"])
    if "LC_CTYPE" in ZYGOTE_ENV and not {"LC_ALL", "LC_CTYPE", "LANG"} & set(req["env"]):
        os.environ["LC_CTYPE"] = ZYGOTE_ENV["LC_CTYPE"]
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    code = req.get("code")
    if code is not None:
        sys.argv = ["-c"] + req["args"]
        sys.path[0] = ""
        source, filename = code, "<string>"
    else:
        path = os.path.join(req["work_dir"], req["file"])
        sys.argv = [req["file"]] + req["args"]
        sys.path[0] = os.path.dirname(path)
        main.__file__ = path
        with open(path, "rb") as f:
            source, filename = f.read(), path
        main.__cached__ = None
    try:
        exec(compile(source, filename, "exec"), main.__dict__)
        status = 0
    except SystemExit as e:
        status = _exit_status(e.code)
    except BaseException as e:
        # The program's traceback starts at its own code, as in a fresh python3.
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        status = -signal.SIGINT if isinstance(e, KeyboardInterrupt) else 1
    _finalize(status)


def _exit_status(code):
    """The exit status `raise SystemExit(code)` gives in a fresh python3."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _finalize(status):
    """Ends the process as interpreter shutdown does (wait for non-daemon
    threads, atexit handlers, flush stdout and stderr), without tearing the
    whole interpreter down object by object, which costs milliseconds and
    only matters to the process itself, which is about to be gone."""
    try:
        import threading
        threading._shutdown()
    except BaseException:
        pass
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = status or 120
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


_request = zygote()
del zygote, stub, run_payload, setup_payload, collect_outputs, _collect_one
run_program(_request)
