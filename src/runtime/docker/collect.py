
# --- The declared output files (runtime/docker/files.rs). The bootstrap above
# (pid 1, not dumpable) has unpacked the work dir and left the spec (JSON:
# marker, paths, caps, `spec_len` bytes) on stdin, ahead of the program's
# stdin; `fail`, `start_program` and `wait_program` are its own. It forks the
# program, reads the spec while the program's process waits (so that process
# never holds the marker, not even in memory it could scan), lets it go,
# waits, and then, as the container's last process, writes the marker and one
# record per path on stdout, and the end trailer (files.rs): the end record,
# then the marker on stderr.
import errno, json, stat, struct, time
go = os.pipe()
start_program(go)
try:
    spec = json.loads(take(spec_len))
except BaseException as e:
    fail(e)
os.write(go[1], b"1")
os.close(go[1])
exit_status = wait_program()

# Nothing else may write on stdout from here on: end every other process of
# the container (kill(-1) spares pid 1, the caller), reap them (they are all
# its children now), and wait until each is gone or a zombie, which holds no
# file.
def others_alive():
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            return True
    return False

def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
for _ in range(2000):
    reap()
    alone = not others_alive()
    if alone:
        break
    time.sleep(0.001)

# Record kinds (runtime/output_files.rs), and the end record (files.rs).
COLLECTED, MISSING, NOT_REGULAR, NOT_COLLECTED, END = 1, 2, 3, 4, 5
O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

def record(kind, size=0, kept=b""):
    return struct.pack("<IIQQ", kind, 0, size, len(kept)) + kept

def open_regular(work, work_dev, path):
    """(COLLECTED, an O_PATH fd of the regular file at `path` beneath
    `work`), or (the record kind saying why not, None). Each component is opened with O_NOFOLLOW and
    checked: a symbolic link is never followed, a mount never crossed."""
    d = os.open(".", O_PATH | os.O_DIRECTORY, dir_fd=work)
    try:
        parts = path.split("/")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                fd = os.open(part, O_PATH, dir_fd=d)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                    return MISSING, None
                raise
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) or st.st_dev != work_dev:
                kind = NOT_REGULAR
            elif last:
                if stat.S_ISREG(st.st_mode):
                    return COLLECTED, fd
                kind = NOT_REGULAR
            elif not stat.S_ISDIR(st.st_mode):
                kind = MISSING
            else:
                os.close(d)
                d = fd
                continue
            os.close(fd)
            return kind, None
    finally:
        os.close(d)

def read_regular(pathfd, room):
    """Up to `room` bytes of the file behind an O_PATH fd, reopened through
    its magic link (the same inode, no lookup), O_NONBLOCK; made readable by
    its owner first if the program took that away."""
    proc = "/proc/self/fd/%d" % pathfd
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(proc, flags)
    except PermissionError:
        os.chmod(proc, stat.S_IMODE(os.fstat(pathfd).st_mode) | stat.S_IRUSR)
        fd = os.open(proc, flags)
    try:
        size = os.fstat(fd).st_size
        data = bytearray()
        while len(data) < room:
            chunk = os.read(fd, min(room - len(data), 1 << 20))
            if not chunk:
                break
            data += chunk
        return max(size, len(data)), bytes(data)
    finally:
        os.close(fd)

def collect(work, work_dev, path, room):
    try:
        kind, found = open_regular(work, work_dev, path)
    except OSError:
        return record(NOT_COLLECTED)
    if found is None:
        return record(kind)
    try:
        size, data = read_regular(found, room)
        return record(COLLECTED, size, data)
    except OSError:
        return record(NOT_COLLECTED)
    finally:
        os.close(found)

def write_all(data, fd=1):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

try:
    write_all(spec["marker"].encode())
    work = os.open("/work", O_PATH | os.O_DIRECTORY)
    work_dev = os.fstat(work).st_dev
    left = spec["total"]
    for path in spec["paths"]:
        rec = collect(work, work_dev, path, min(spec["cap"], left))
        left -= len(rec) - 24
        write_all(rec)
    # The end trailer, only when no other process is left to write after it
    # and every record went out whole: the end record, carrying the status
    # this process ends with, then the marker on stderr. The host ends the
    # call there, without waiting for Docker to tear the container down.
    if alone:
        write_all(record(END, exit_status))
        write_all(spec["marker"].encode(), 2)
except OSError:
    pass  # the paths not written come back not_collected

# End as the program ended (see `wait_program`): pid 1 ends the container.
os._exit(exit_status)
