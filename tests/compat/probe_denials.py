"""Which syscalls the sandbox denies, and with what errno: run it inside `pyward run`.

    pyward run --policy tests/compat/standard-loopback.toml tests/compat/probe_denials.py -- [NAME ...]

Each call is made directly (ctypes, x86_64 numbers) with harmless arguments
(invalid fds, NULL pointers, -1 ids), so an allowed call fails with the
kernel's own EBADF/EFAULT/EINVAL or succeeds harmlessly, and a denied one
fails with the filter's errno (EPERM under `denied = "errno"`). The calls of
the always-killed set (dangerous.toml) and calls that would block are left
out. Evidence for tests/compat/expected.toml; x86_64 only.
"""
import ctypes, os, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
NR = dict(creat=85, msync=26, statfs=137, fstatfs=138, listxattr=194, getxattr=191, setxattr=188, flistxattr=196,
          memfd_create=319, splice=275, copy_file_range=326, rt_sigtimedwait=128, eventfd2=290, getpriority=140,
          setpriority=141, prctl=157, chown=92, fchown=93, lchown=94, fchownat=260, setreuid=113, setregid=114,
          setresuid=117, setresgid=119, sched_setaffinity=203, sched_getparam=143, sched_getscheduler=145,
          sched_get_priority_max=146, sched_get_priority_min=147, sched_rr_get_interval=148, mlock=149, munlock=150,
          mlockall=151, mincore=27, timerfd_create=283, signalfd4=289, inotify_init1=294, fallocate=285,
          pipe=22, nanosleep=35, pause=34, rt_sigsuspend=130, rt_sigqueueinfo=129, getcpu=309, pidfd_open=434,
          pidfd_send_signal=424, sync=162, syncfs=306, mknodat=259, mknod=133, capget=125, personality=135,
          semget=64, shmget=29, msgget=68, ioprio_get=252, getpgid=121, getsid=124, wait4=61, waitid=247,
          tee=276, vmsplice=278, sched_setscheduler=144, sched_setparam=142, setsid=112, umount2=166,
          name_to_handle_at=303, sethostname=170, setdomainname=171, sendmmsg=307, recvmmsg=299,
          epoll_pwait2=441, faccessat2=439, close_range=436, statx=332, readahead=187, sync_file_range=277,
          posix_fadvise=221, futex_waitv=449, membarrier=324, pkey_alloc=330, mseal=462, rt_tgsigqueueinfo=297,
          setitimer=38, clock_adjtime=305, unshare=272, getrusage=98, utime=132, utimes=235, futimesat=261,
          fchmodat2=452, openat2=437, open=2, renameat2=316, getdents=78, lremovexattr=198, removexattr=197)
only = sys.argv[1:]
for name, nr in NR.items():
    if only and name not in only: continue
    ctypes.set_errno(0)
    # harmless arguments: invalid fds / NULL pointers make the kernel fail with EBADF/EFAULT/EINVAL if allowed
    args = {"creat": (b"/tmp/probe-creat", 0o600), "chown": (b"/tmp/probe-creat", -1, -1), "lchown": (b"/tmp/probe-creat", -1, -1),
            "setreuid": (-1, -1), "setregid": (-1, -1), "setresuid": (-1,-1,-1), "setresgid": (-1,-1,-1),
            "getpriority": (0, 0), "getpgid": (0,), "getsid": (0,), "sched_getscheduler": (0,), "sched_get_priority_max": (0,),
            "sched_get_priority_min": (0,), "mlockall": (0,), "sync": (), "capget": (0, 0), "personality": (0xffffffff,),
            "ioprio_get": (1, 0), "getcpu": (0, 0, 0), "pidfd_open": (os.getpid(), 0), "inotify_init1": (0,),
            "timerfd_create": (1, 0), "eventfd2": (0, 0), "memfd_create": (b"x", 0), "semget": (0, 1, 0o600|0o1000),
            "shmget": (0, 4096, 0o600|0o1000), "msgget": (0, 0o600|0o1000), "pipe": (0,), "umount2": (b"/nonexistent", 0),
            "sethostname": (b"x", 1), "setdomainname": (b"x", 1), "unshare": (0,), "membarrier": (0, 0, 0),
            "pkey_alloc": (0, 0), "setsid": (), "close_range": (1000, 1001, 0), "prctl": (16, 0, 0, 0, 0)}.get(name, (-1, 0, 0, 0, 0, 0))
    if name in ("umount2","unshare","sethostname","setdomainname","clock_adjtime","name_to_handle_at", "pause", "rt_sigsuspend"): 
        continue  # killed set / would block
    r = libc.syscall(nr, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    e = ctypes.get_errno()
    print(f"{name:24} r={r:<4} {errno.errorcode.get(e, e) if r == -1 else ''}")
