//! The warm path: per (rootfs, user, base environment), a zygote interpreter
//! that has imported site and the configured modules and forks one sandboxed
//! child per call (see `zygote.py` for the child's side, step by step).
//!
//! The zygote is started by the cold machinery (`supervise::spawn_stub`:
//! the same namespaces, root and cgroup), keeps its user namespace's
//! capabilities and runs without seccomp; it never runs a program and never
//! reads a request (only its forks do). Each call gets fresh mount, pid, ipc,
//! uts, net and cgroup namespaces, a fresh /proc, /tmp and work dir, its own
//! cgroup with the call's limits, its rlimits, the sandbox uid, no
//! capabilities, no_new_privs and its seccomp filters before its program runs,
//! and is watched by `supervise::watch` like a cold run.

use super::outputs;
use super::plan::{self, PROC_COVERS, Plan, WORK_DIR};
use super::status::{MESSAGE_LEN, Message, Step};
use super::supervise::{self, ParentSide, Stub, Watched};
use super::{NativeError, NativeRuntime};
use crate::policy::{Network, SandboxPolicy};
use crate::runtime::output_files::{self, OutputCaps};
use crate::runtime::{Entrypoint, Outcome, RunError, RunWatch, Runtime, Submission};
use crate::sys;
use crate::sys::cgroup::{Cgroup, CgroupLimits};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::unistd::pipe2;
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The zygote's script: trusted, fixed, shipped inside pyward.
const ZYGOTE_SCRIPT: &str = include_str!("zygote.py");
/// How long a zygote may take to import its modules.
const ZYGOTE_START: Duration = Duration::from_secs(30);

/// Settings of the warm path.
#[derive(Debug, Clone)]
pub struct WarmConfig {
    /// Modules every zygote imports before it forks (site is always there).
    pub modules: Vec<String>,
    /// Most zygotes kept at once (one per sandbox user and base environment
    /// in use); starting one more stops the one used least recently.
    pub max_zygotes: usize,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            modules: Vec::new(),
            max_zygotes: 8,
        }
    }
}

/// The native runtime's warm path: calls fork from a pre-initialised,
/// sandboxed interpreter instead of starting a fresh one.
pub struct WarmRuntime {
    native: Arc<NativeRuntime>,
    zygotes: Arc<Mutex<HashMap<ZygoteKey, Entry>>>,
    max_zygotes: usize,
    /// Starts zygotes on a thread of its own (see [`Spawner`]).
    spawner: Spawner,
    /// Replaces zygotes that died, without waiting for a call to notice.
    keeper: Option<Keeper>,
    /// Frees each call's cgroup slot once the call's processes are gone.
    cleanup: Option<std::sync::mpsc::Sender<Finished>>,
    cleanup_thread: Option<std::thread::JoinHandle<()>>,
}

/// What a zygote's sandbox depends on besides the runtime's rootfs: the
/// user its /etc/passwd names and the environment it starts with.
type ZygoteKey = (u32, u32, Vec<(String, String)>);

/// A zygote, the policy it was started for and when a call last used it.
struct Entry {
    zygote: Arc<Zygote>,
    policy: SandboxPolicy,
    used: Instant,
}

/// How often the keeper looks for dead zygotes.
const KEEPER_PERIOD: Duration = Duration::from_millis(250);
/// How long the keeper waits before trying again to start a zygote that failed.
const KEEPER_BACKOFF: Duration = Duration::from_secs(10);

/// The thread that replaces dead zygotes; stops when dropped.
struct Keeper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn start(zygotes: Arc<Mutex<HashMap<ZygoteKey, Entry>>>, spawner: SpawnQueue) -> Keeper {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pyward-zygote-keeper".into())
            .spawn(move || {
                let mut failed = HashMap::new();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(KEEPER_PERIOD)
                {
                    Keeper::replace_dead(&zygotes, &spawner, &mut failed);
                }
            })
            .ok();
        Keeper {
            stop: Some(stop),
            thread,
        }
    }

    /// Starts a new zygote for every dead one. A zygote that cannot start
    /// stays dead (the next call for it tries again and reports why); the
    /// keeper tries again after [`KEEPER_BACKOFF`], as `failed` records.
    fn replace_dead(
        zygotes: &Mutex<HashMap<ZygoteKey, Entry>>,
        spawner: &SpawnQueue,
        failed: &mut HashMap<ZygoteKey, Instant>,
    ) {
        failed.retain(|_, at| at.elapsed() < KEEPER_BACKOFF);
        let dead: Vec<(ZygoteKey, SandboxPolicy)> = lock(zygotes)
            .iter()
            .filter(|(key, entry)| !failed.contains_key(*key) && !entry.zygote.alive())
            .map(|(key, entry)| (key.clone(), entry.policy.clone()))
            .collect();
        for (key, policy) in dead {
            match spawner.start(&policy) {
                Ok(zygote) => {
                    let mut zygotes = lock(zygotes);
                    // A call may have replaced it meanwhile; keep the live one.
                    if let Some(entry) = zygotes.get_mut(&key)
                        && !entry.zygote.alive()
                    {
                        tracing::info!(policy = %policy.name, "a dead zygote was replaced");
                        entry.zygote = Arc::new(zygote);
                    }
                }
                Err(error) => {
                    tracing::warn!(policy = %policy.name, %error, "cannot replace a dead zygote");
                    failed.insert(key, Instant::now());
                }
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WarmRuntime {
    /// A warm path over `native`; zygotes start on first use.
    pub fn new(native: NativeRuntime, config: WarmConfig) -> WarmRuntime {
        let (cleanup, finished) = std::sync::mpsc::channel::<Finished>();
        let cleanup_thread = std::thread::Builder::new()
            .name("pyward-warm-cleanup".into())
            .spawn(move || finished.into_iter().for_each(Finished::wait))
            .ok();
        let native = Arc::new(native);
        let zygotes = Arc::new(Mutex::default());
        let spawner = Spawner::new(native.clone(), config.clone());
        WarmRuntime {
            max_zygotes: config.max_zygotes.max(1),
            keeper: Some(Keeper::start(zygotes.clone(), spawner.queue())),
            spawner,
            native,
            zygotes,
            cleanup: cleanup_thread.as_ref().map(|_| cleanup),
            cleanup_thread,
        }
    }

    /// Starts the zygote for `policy` now, if it is not running.
    pub fn prestart(&self, policy: &SandboxPolicy) -> Result<(), RunError> {
        self.zygote(policy, false).map(drop)
    }

    /// Kills every zygote (their entries stay, as after a crash). For tests.
    #[doc(hidden)]
    pub fn kill_zygotes_for_tests(&self) {
        let zygotes = lock(&self.zygotes);
        for Entry { zygote, .. } in zygotes.values() {
            let _ = sys::process::pidfd_send_signal(zygote.stub.pidfd.as_fd(), libc::SIGKILL);
            let mut fds = [PollFd::new(zygote.stub.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(5000u16));
        }
    }

    fn zygote(&self, policy: &SandboxPolicy, restart: bool) -> Result<Arc<Zygote>, RunError> {
        let key = (
            policy.user.uid,
            policy.user.gid,
            policy.environment(&Default::default()),
        );
        let mut zygotes = lock(&self.zygotes);
        if let Some(entry) = zygotes.get_mut(&key)
            && !restart
            && entry.zygote.alive()
        {
            entry.used = Instant::now();
            return Ok(entry.zygote.clone());
        }
        if !zygotes.contains_key(&key) && zygotes.len() >= self.max_zygotes {
            // Calls in flight keep theirs alive; it stops with the last of them.
            let oldest = zygotes
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                zygotes.remove(&oldest);
            }
        }
        let zygote = Arc::new(self.spawner.queue().start(policy)?);
        let entry = Entry {
            zygote: zygote.clone(),
            policy: policy.clone(),
            used: Instant::now(),
        };
        zygotes.insert(key, entry);
        Ok(zygote)
    }

    /// Zygotes running now, ready to fork a call.
    pub fn zygotes(&self) -> usize {
        let zygotes = lock(&self.zygotes);
        zygotes
            .values()
            .filter(|entry| entry.zygote.alive())
            .count()
    }

    fn finish(&self, finished: Finished) {
        match &self.cleanup {
            Some(queue) => {
                if let Err(std::sync::mpsc::SendError(f)) = queue.send(finished) {
                    f.wait();
                }
            }
            None => finished.wait(),
        }
    }
}

/// The thread zygotes are started from. A zygote's pid 1 gets SIGKILL when
/// its parent goes, and for the kernel the parent is the *thread* that
/// cloned it: started from a caller's thread, a zygote (and every call in
/// flight) would die when that thread does, as pool threads do.
struct Spawner {
    requests: Option<std::sync::mpsc::Sender<SpawnRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type SpawnRequest = (
    SandboxPolicy,
    std::sync::mpsc::Sender<Result<Zygote, RunError>>,
);

impl Spawner {
    fn new(native: Arc<NativeRuntime>, config: WarmConfig) -> Spawner {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("pyward-zygotes".into())
            .spawn(move || {
                for (policy, reply) in incoming {
                    let _ = reply.send(Zygote::start(&native, &policy, &config));
                }
            })
            .ok();
        Spawner {
            requests: thread.as_ref().map(|_| requests),
            thread,
        }
    }

    /// Where requests to start a zygote go.
    fn queue(&self) -> SpawnQueue {
        SpawnQueue(self.requests.clone())
    }
}

/// A handle on the [`Spawner`]'s thread.
struct SpawnQueue(Option<std::sync::mpsc::Sender<SpawnRequest>>);

impl SpawnQueue {
    /// Starts a zygote for `policy` on the spawner's thread.
    fn start(&self, policy: &SandboxPolicy) -> Result<Zygote, RunError> {
        let gone = || NativeError::ZygoteStart {
            log: "the thread that starts zygotes is gone".into(),
        };
        let requests = self.0.as_ref().ok_or_else(gone)?;
        let (reply, answer) = std::sync::mpsc::channel();
        requests.send((policy.clone(), reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WarmRuntime {
    fn drop(&mut self) {
        // First the keeper: it holds a queue to the spawner, whose thread
        // ends only when every queue is gone.
        drop(self.keeper.take());
        drop(self.cleanup.take());
        if let Some(thread) = self.cleanup_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Runtime for WarmRuntime {
    fn name(&self) -> &'static str {
        "native-warm"
    }

    fn kind(&self) -> &'static str {
        "native"
    }

    fn prewarm(&self, policy: &SandboxPolicy) -> Result<(), RunError> {
        self.prestart(policy)
    }

    fn warm_ready(&self) -> usize {
        self.zygotes()
    }

    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let request = Request::new(&self.native, policy, submission)?;
        let cgroup = self.native.cgroups.acquire().map_err(NativeError::from)?;
        cgroup
            .set_limits(&super::cgroup_limits(&policy.limits))
            .map_err(NativeError::from)?;
        let loopback = policy.network == Network::Loopback;
        let mut zygote = self.zygote(policy, false)?;
        let mut call = Call::new(&submission.stdin, !request.outputs.is_empty())?;
        let mut netns = zygote.take_netns(loopback);
        let started = Instant::now();
        if zygote.fork(&call, netns.as_ref()).is_err() {
            // The zygote died since its last call: start another, once (the
            // namespace belonged to the old one's user namespace).
            netns = None;
            zygote = self.zygote(policy, true)?;
            zygote
                .fork(&call, None)
                .map_err(|source| NativeError::Warm {
                    step: "ask the zygote to fork",
                    source,
                })?;
        }
        call.close_child_ends();
        let ran = call.run(&request, &cgroup, &policy.limits, started, watch)?;
        // A network namespace is reused only when the call's pid 1 was in
        // the cgroup, whose emptiness then proves every user of it gone.
        let netns = ran
            .stub
            .as_ref()
            .and(netns.or(ran.new_netns))
            .map(|fd| NetnsReturn {
                zygote,
                loopback,
                fd,
            });
        self.finish(Finished {
            stub: ran.stub,
            cgroup,
            netns,
        });
        Ok(ran.outcome)
    }
}

/// A call whose outcome has gone back; its cgroup slot is reused once every
/// process of the call has gone (the zygote's init reaps the call's stub).
struct Finished {
    stub: Option<OwnedFd>,
    cgroup: Cgroup,
    netns: Option<NetnsReturn>,
}

/// A call's network namespace, to go back to its zygote's idle list.
struct NetnsReturn {
    zygote: Arc<Zygote>,
    loopback: bool,
    fd: OwnedFd,
}

impl Finished {
    fn wait(self) {
        if let Some(pidfd) = &self.stub {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(5000u16));
        }
        for _ in 0..500 {
            if self.cgroup.is_empty().unwrap_or(false) {
                if let Some(netns) = self.netns {
                    netns.zygote.give_back_netns(netns.loopback, netns.fd);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Never hand out a slot that still holds a process: keep it claimed.
        tracing::warn!("a warm call's cgroup is not empty after 0.5 s; its slot stays claimed");
        std::mem::forget(self.cgroup);
    }
}

/// A running zygote: its control socket, and the stub behind it (pyward's child).
struct Zygote {
    control: OwnedFd,
    /// Network namespaces of finished calls (in the zygote's user
    /// namespace), `lo` down and up: creating is cheap, tearing down is not.
    idle_netns: Mutex<[Vec<OwnedFd>; 2]>,
    stub: Stub,
    _cgroup: Cgroup,
    _netns: OwnedFd,
}

impl Zygote {
    fn start(
        native: &NativeRuntime,
        policy: &SandboxPolicy,
        config: &WarmConfig,
    ) -> Result<Zygote, RunError> {
        let seccomp = native.seccomp(policy)?;
        let mut args = vec![zygote_constants(native.landlock.as_deref())];
        args.extend(config.modules.iter().cloned());
        let script = Submission {
            args,
            ..Submission::code(ZYGOTE_SCRIPT)
        };
        let mut plan = Plan::new(&native.config, policy, &script, seccomp, None)?;
        plan.zygote = true;
        // The zygote's own work dir is never used (each call mounts its own):
        // no owner, so that an unmapped sandbox uid fails the call, not the zygote.
        plan.work_options =
            std::ffi::CString::new(format!("size={},mode=0755", policy.limits.tmpfs.bytes()))
                .unwrap_or_default();
        // The calls lower these; a zygote may not raise them again.
        plan.rlimits = vec![(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)];
        let netns = native.netns.take(false)?;
        let cgroup = native.cgroups.acquire().map_err(NativeError::from)?;
        cgroup
            .set_limits(&CgroupLimits {
                memory_bytes: policy.limits.memory.bytes().max(256 << 20),
                pids: 1024,
                cpu_quota_us: 200_000,
                cpu_period_us: 100_000,
            })
            .map_err(NativeError::from)?;
        let warm = |step: &'static str| move |source| NativeError::Warm { step, source };
        let (control, theirs) =
            sys::unix::control_pair().map_err(warm("make the control socket"))?;
        let log = memfd_create(c"pyward-zygote-log", MFdFlags::MFD_CLOEXEC)
            .map_err(warm("make the zygote's log"))?;
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(warm("make a pipe"));
        let (status, go) = (pipe()?, pipe()?);
        let parent =
            sys::process::pidfd_self().map_err(|source| NativeError::SelfPidfd { source })?;
        let fds = super::child::ChildFds {
            stdin: theirs.as_raw_fd(),
            stdout: log.as_raw_fd(),
            stderr: log.as_raw_fd(),
            status: status.1.as_raw_fd(),
            go: go.0.as_raw_fd(),
            parent: parent.as_raw_fd(),
            files: -1,
        };
        let clone_target = cgroup.clone_target().map_err(NativeError::from)?;
        let flags = super::supervise::sandbox_clone_flags(clone_target.is_some());
        let args = sys::clone::CloneArgs {
            flags,
            cgroup: clone_target.as_ref().map(|fd| fd.as_raw_fd()),
        };
        let spawned = sys::netns::within(&netns, || supervise::spawn_stub(args, &plan, fds))
            .map_err(|source| NativeError::Netns { source })?;
        let (pid, pidfd) = spawned.map_err(|source| NativeError::Clone { source })?;
        let stub = Stub { pid, pidfd };
        drop((theirs, status.1, go.0, parent));
        if let Err(error) = supervise::release_child(pid, native.ids, &cgroup, go.1) {
            stub.kill();
            return Err(error.into());
        }
        let zygote = Zygote {
            control,
            idle_netns: Mutex::default(),
            stub,
            _cgroup: cgroup,
            _netns: netns,
        };
        if !zygote.wait_ready() {
            let mut text = String::new();
            let mut file = std::fs::File::from(log);
            let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
            let setup = supervise::last_message(&read_available(&status.0));
            let log = match setup {
                Some(message @ Message::SetupFailed { .. }) => format!("{message:?} {text}"),
                _ => text,
            };
            return Err(NativeError::ZygoteStart { log }.into());
        }
        Ok(zygote)
    }

    /// Waits for the zygote's "R" (its modules are imported).
    fn wait_ready(&self) -> bool {
        let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(ZYGOTE_START.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) != 1 {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(nix::unistd::read(&self.control, &mut byte), Ok(1) if byte == *b"R")
    }

    fn alive(&self) -> bool {
        let mut fds = [PollFd::new(self.stub.pidfd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap_or(1) == 0
    }

    /// Asks the zygote to fork the pid 1 of `call`, into `netns` if given.
    fn fork(&self, call: &Call, netns: Option<&OwnedFd>) -> nix::Result<()> {
        let child = call.child.as_ref().ok_or(nix::Error::EBADF)?;
        let mut fds = vec![
            child.call.as_raw_fd(),
            child.stdin.as_raw_fd(),
            child.stdout.as_raw_fd(),
            child.stderr.as_raw_fd(),
        ];
        // "F" or "N" (with a network namespace), then "O" with the output files' memfd.
        let mut kind = Vec::with_capacity(2);
        kind.push(if netns.is_some() { b'N' } else { b'F' });
        if let Some(files) = &call.files {
            kind.push(b'O');
            fds.push(files.as_raw_fd());
        }
        if let Some(netns) = netns {
            fds.push(netns.as_raw_fd());
        }
        sys::unix::send_with_fds(&self.control, &kind, &fds)
    }

    fn take_netns(&self, loopback: bool) -> Option<OwnedFd> {
        self.lock_netns()[usize::from(loopback)].pop()
    }

    fn give_back_netns(&self, loopback: bool, netns: OwnedFd) {
        self.lock_netns()[usize::from(loopback)].push(netns);
    }

    fn lock_netns(&self) -> std::sync::MutexGuard<'_, [Vec<OwnedFd>; 2]> {
        self.idle_netns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = sys::process::pidfd_send_signal(self.stub.pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::process::wait4(self.stub.pid);
    }
}

impl Stub {
    fn kill(self) {
        let _ = sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::process::wait4(self.pid);
    }
}

/// One call's sockets and pipes.
struct Call {
    call: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// The memfd the call's pid 1 writes the output files' records into, when files are declared.
    files: Option<OwnedFd>,
    child: Option<ChildEnds>,
}

/// The ends the zygote passes on to the call.
struct ChildEnds {
    call: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Call {
    fn new(stdin: &[u8], outputs: bool) -> Result<Call, NativeError> {
        let warm = |step: &'static str| move |source| NativeError::Warm { step, source };
        let (call, child_call) = sys::unix::call_pair().map_err(warm("make the call's socket"))?;
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(warm("make a pipe"));
        let (stdout, stderr) = (pipe()?, pipe()?);
        let memfd = memfd_create(c"pyward-stdin", MFdFlags::MFD_CLOEXEC)
            .map_err(|source| NativeError::Pipe { source })?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(stdin)
            .and_then(|()| file.rewind())
            .map_err(|source| NativeError::Stdin { source })?;
        for fd in [&stdout.0, &stderr.0] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(warm("set O_NONBLOCK"))?;
        }
        let files = outputs
            .then(|| memfd_create(c"pyward-output-files", MFdFlags::MFD_CLOEXEC))
            .transpose()
            .map_err(warm("make the output files' memfd"))?;
        Ok(Call {
            call,
            stdout: stdout.0,
            stderr: stderr.0,
            files,
            child: Some(ChildEnds {
                call: child_call,
                stdin: file.into(),
                stdout: stdout.1,
                stderr: stderr.1,
            }),
        })
    }

    /// Closes our copies of the call's ends, so EOF means the call is gone.
    fn close_child_ends(&mut self) {
        self.child = None;
    }

    /// Sends the request, moves the call's stub into `cgroup`, lets it go on
    /// and watches it like a cold run. Returns the outcome and the stub's pidfd.
    fn run(
        mut self,
        request: &Request,
        cgroup: &Cgroup,
        limits: &crate::policy::Limits,
        started: Instant,
        watch: &RunWatch,
    ) -> Result<Ran, NativeError> {
        let before = cgroup.counters()?;
        let cpu_before = cgroup.cpu_usage()?;
        // The stub's own report is the payload's usage on this path (it is
        // never reaped here: the zygote is its parent).
        let files = self.files.take();
        let finish = |watched: Watched| {
            let usage = watched.usage.unwrap_or_default();
            let wall = started.elapsed();
            let last = watched.message;
            let mut outcome =
                supervise::outcome(watched, usage, cgroup, &before, cpu_before, limits, wall)?;
            outcome.files =
                outputs::read_records(files.as_ref(), last, &request.outputs, request.caps);
            Ok::<_, NativeError>(outcome)
        };
        let (stub, new_netns) = match self.handshake(cgroup, limits, started) {
            Ok(Handshake::Released(pidfd, netns)) => {
                // The request goes once pid 1 is in the call's cgroup, which
                // its memory then counts against. A pid 1 that died meanwhile
                // is seen by the watch below.
                let _ = send_all(&self.call, &request.bytes);
                (pidfd, netns)
            }
            Ok(Handshake::Failed(bytes)) => {
                let watched = Watched {
                    stdout: Default::default(),
                    stderr: Default::default(),
                    message: supervise::last_message(&bytes),
                    usage: None,
                    killed: None,
                    exited: true,
                };
                let outcome = finish(watched)?;
                return Ok(Ran {
                    outcome,
                    stub: None,
                    new_netns: None,
                });
            }
            Err(source) => {
                return Err(NativeError::Warm {
                    step: "hand the call to the zygote",
                    source,
                });
            }
        };
        fcntl(&self.call, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|source| {
            NativeError::Warm {
                step: "set O_NONBLOCK",
                source,
            }
        })?;
        let pipes = ParentSide {
            stdout: self.stdout,
            stderr: self.stderr,
            status: self.call,
        };
        let cpu_used = || cgroup.cpu_usage().map(|now| now.saturating_sub(cpu_before));
        let watched = supervise::watch(&pipes, &stub, limits, &cpu_used, started, watch);
        let outcome = finish(watched)?;
        Ok(Ran {
            outcome,
            stub: Some(stub),
            new_netns,
        })
    }

    /// Waits for the stub's "P" (with its pid), moves it into the cgroup and
    /// sends "G". A setup failure before that comes back as its bytes.
    fn handshake(
        &self,
        cgroup: &Cgroup,
        limits: &crate::policy::Limits,
        started: Instant,
    ) -> nix::Result<Handshake> {
        let deadline = started + limits.wall_time;
        let mut fds = [PollFd::new(self.call.as_fd(), PollFlags::POLLIN)];
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().clamp(1, 60_000) as u16;
        if poll(&mut fds, PollTimeout::from(ms))? == 0 {
            return Err(nix::Error::ETIMEDOUT);
        }
        let mut first = [0u8; 1];
        let (n, pid, netns) = sys::unix::recv_with_pid(&self.call, &mut first)?;
        match (n, pid) {
            (1, Some(pid)) if first == *b"P" => {
                let pidfd = sys::process::pidfd_open(pid)?;
                if cgroup.attach(pid).is_err() {
                    let _ = sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                    return Err(nix::Error::EIO);
                }
                send_all(&self.call, b"G")?;
                Ok(Handshake::Released(pidfd, netns))
            }
            (0, _) => Ok(Handshake::Failed(Vec::new())),
            _ => {
                let mut bytes = first[..n].to_vec();
                let mut rest = [0u8; MESSAGE_LEN];
                while let Ok(more @ 1..) = nix::unistd::read(&self.call, &mut rest) {
                    bytes.extend_from_slice(&rest[..more]);
                }
                Ok(Handshake::Failed(bytes))
            }
        }
    }
}

enum Handshake {
    /// The stub's pidfd, and the network namespace it made (none when it joined one).
    Released(OwnedFd, Option<OwnedFd>),
    Failed(Vec<u8>),
}

/// A watched call: its outcome, its stub's pidfd and any new network namespace.
struct Ran {
    outcome: Outcome,
    stub: Option<OwnedFd>,
    new_netns: Option<OwnedFd>,
}

fn send_all(sock: &OwnedFd, mut bytes: &[u8]) -> nix::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    while !bytes.is_empty() {
        match send(sock.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_available(fd: &OwnedFd) -> Vec<u8> {
    let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = nix::unistd::read(fd, &mut buf) {
        bytes.extend_from_slice(&buf[..n]);
    }
    bytes
}

/// What the zygote takes from pyward's plan rather than deciding itself: the
/// step numbers its status messages use (by the zygote's names), the /proc
/// paths each call covers (`plan::PROC_COVERS`) and the Landlock rules each
/// call restricts itself to (`plan::LandlockPlan`), if any.
fn zygote_constants(landlock: Option<&plan::LandlockPlan>) -> String {
    let step = |s: Step| s as u32;
    let proc_covers: Vec<_> = PROC_COVERS
        .iter()
        .map(|(path, cover)| (path, cover.name()))
        .collect();
    let steps = serde_json::json!({
        "unshare": step(Step::WarmUnshare),
        "unshare_cgroup": step(Step::UnshareCgroup),
        "fork": step(Step::ForkPayload),
        "stdio": step(Step::Stdio),
        "proc": step(Step::MountProc),
        "proc_covers": step(Step::CoverProc),
        "tmp": step(Step::MountTmp),
        "work": step(Step::MountWork),
        "work_files": step(Step::WorkFiles),
        "warm": step(Step::WarmSetup),
        "rlimits": step(Step::Rlimits),
        "bounding": step(Step::DropBoundingSet),
        "user": step(Step::SwitchUser),
        "caps": step(Step::ClearCapabilities),
        "close_fds": step(Step::CloseFds),
        "nnp": step(Step::NoNewPrivs),
        "landlock": step(Step::Landlock),
        "seccomp": step(Step::Seccomp),
    });
    let landlock = landlock.map(|plan| {
        let rules: Vec<_> = plan
            .rules
            .iter()
            .map(|(path, access)| (path.to_string_lossy(), access))
            .collect();
        serde_json::json!({ "handled_fs": plan.handled_fs, "scoped": plan.scoped, "rules": rules })
    });
    serde_json::json!({ "steps": steps, "proc_covers": proc_covers, "landlock": landlock })
        .to_string()
}

/// The call's request as the call's pid 1 reads it: a length, a JSON header,
/// then the files' contents and the seccomp programs, back to back.
struct Request {
    bytes: Vec<u8>,
    /// The declared output files, and how much of them comes back.
    outputs: Vec<String>,
    caps: OutputCaps,
}

impl Request {
    fn new(
        native: &NativeRuntime,
        policy: &SandboxPolicy,
        submission: &Submission,
    ) -> Result<Request, RunError> {
        let limits = &policy.limits;
        let tmpfs = limits.tmpfs.bytes();
        let (dirs, files) = plan::work_files(submission, std::path::Path::new(""), tmpfs)?;
        output_files::check_paths(&submission.outputs).map_err(RunError::InvalidSubmission)?;
        let caps = OutputCaps::of(limits);
        let text = |c: &std::ffi::CString| c.to_string_lossy().into_owned();
        let mut blobs: Vec<u8> = Vec::new();
        let mut file_list = Vec::new();
        for file in &files {
            file_list.push(serde_json::json!([text(&file.path), file.contents.len()]));
            blobs.extend_from_slice(&file.contents);
        }
        let seccomp = native.seccomp(policy)?;
        let mut programs = Vec::new();
        for program in seccomp.programs() {
            let start = blobs.len();
            for insn in program {
                blobs.extend_from_slice(&insn.code.to_ne_bytes());
                blobs.extend_from_slice(&[insn.jt, insn.jf]);
                blobs.extend_from_slice(&insn.k.to_ne_bytes());
            }
            programs.push(serde_json::json!([start, blobs.len() - start]));
        }
        let nul =
            |what: &str| RunError::InvalidSubmission(format!("{what} may not contain NUL bytes"));
        let (code, file) = match &submission.entrypoint {
            Entrypoint::Code(code) if code.contains('\0') => return Err(nul("code")),
            Entrypoint::Code(code) => (Some(code.clone()), None),
            Entrypoint::File(path) => {
                if !submission.files.iter().any(|f| &f.path == path) {
                    return Err(RunError::InvalidSubmission(format!(
                        "entrypoint {path:?} is not one of the submission's files"
                    )));
                }
                (None, Some(path.clone()))
            }
        };
        if submission.args.iter().any(|a| a.contains('\0')) {
            return Err(nul("arguments"));
        }
        let env: serde_json::Map<String, serde_json::Value> = policy
            .environment(&submission.env)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let (uid, gid) = (policy.user.uid, policy.user.gid);
        let rlimit = |v: u64| i64::try_from(v).unwrap_or(-1);
        let rlimits: Vec<_> = plan::rlimits(limits)
            .into_iter()
            .map(|(resource, soft, hard)| {
                serde_json::json!([resource as i32, rlimit(soft), rlimit(hard)])
            })
            .collect();
        let header = serde_json::json!({
            "blob_bytes": blobs.len(),
            "tmp_options": format!("size={tmpfs},mode=1777"),
            "work_options": format!("size={tmpfs},mode=0755,uid={uid},gid={gid}"),
            "work_dir": WORK_DIR,
            "dirs": dirs.iter().map(text).collect::<Vec<_>>(),
            "files": file_list,
            "loopback": policy.network == Network::Loopback,
            "rlimits": rlimits,
            "uid": uid,
            "gid": gid,
            "seccomp": programs,
            "env": env,
            "code": code,
            "file": file,
            "args": submission.args,
            "outputs": submission.outputs,
            "output_cap": caps.per_file,
            "output_total": caps.total,
        });
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut bytes = Vec::with_capacity(4 + header.len() + blobs.len());
        bytes.extend_from_slice(&(header.len() as u32).to_ne_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&blobs);
        Ok(Request {
            bytes,
            outputs: submission.outputs.clone(),
            caps,
        })
    }
}
