//! What a caller may watch a run with: its output as the program writes it,
//! and a token to stop it. A runtime honours both in [`super::Runtime::run_watched`];
//! `Runtime::run` is the same run with nobody watching.

use std::sync::{Arc, Mutex, MutexGuard};

/// Which of the program's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Called with each chunk of output as the runtime reads it.
type OutputFn = dyn Fn(Stream, &[u8]) + Send + Sync;

/// An observer of one run: an output callback and a cancel token, both optional.
///
/// The callback gets the chunks in the order the program wrote them, per
/// stream, from the runtime's reading thread; it must return quickly (it
/// holds up the reading). Its chunks are exactly the bytes the outcome keeps:
/// nothing past the policy's output cap is ever passed on.
#[derive(Clone, Default)]
pub struct RunWatch {
    output: Option<Arc<OutputFn>>,
    cancel: Option<CancelToken>,
}

impl std::fmt::Debug for RunWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWatch")
            .field("output", &self.output.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl RunWatch {
    /// A watch that sees nothing and cannot cancel: a plain run.
    pub fn new() -> RunWatch {
        RunWatch::default()
    }

    /// Passes each chunk of output to `output` as it is read.
    pub fn on_output(mut self, output: impl Fn(Stream, &[u8]) + Send + Sync + 'static) -> RunWatch {
        self.output = Some(Arc::new(output));
        self
    }

    /// Kills the sandbox when `token` is cancelled; the outcome then says so.
    pub fn cancel_with(mut self, token: CancelToken) -> RunWatch {
        self.cancel = Some(token);
        self
    }

    /// Hands a chunk to the output callback; empty chunks are not passed on.
    pub(crate) fn emit(&self, stream: Stream, bytes: &[u8]) {
        match &self.output {
            Some(output) if !bytes.is_empty() => output(stream, bytes),
            _ => {}
        }
    }

    /// The cancel token, when the caller gave one.
    pub(crate) fn cancel_token(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }
}

type Waker = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    next_id: u64,
    wakers: Vec<(u64, Waker)>,
}

/// A shared flag that stops a run: cancelling it kills the sandbox of every
/// run watching it (once, from the cancelling thread), now or, for a run that
/// has not started yet, as soon as it starts. Cloning shares the flag.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Mutex<CancelState>>);

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelToken")
            .field(&self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels: wakes every run registered on the token. Idempotent.
    pub fn cancel(&self) {
        let wakers = {
            let mut state = self.lock();
            state.cancelled = true;
            std::mem::take(&mut state.wakers)
        };
        // Outside the lock: a waker may take time (a kill).
        for (_, wake) in wakers {
            wake();
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Runs `wake` when the token is cancelled (at once if it already is),
    /// unless the returned guard is dropped first. A runtime holds the guard
    /// for as long as its sandbox may still need killing.
    pub(crate) fn on_cancel(&self, wake: impl FnOnce() + Send + 'static) -> CancelGuard {
        let mut state = self.lock();
        if state.cancelled {
            drop(state);
            wake();
            return CancelGuard { token: None, id: 0 };
        }
        let id = state.next_id;
        state.next_id += 1;
        state.wakers.push((id, Box::new(wake)));
        CancelGuard {
            token: Some(self.clone()),
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CancelState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps a waker registered on a [`CancelToken`]; dropping it unregisters it.
#[must_use = "dropping the guard unregisters the waker at once"]
pub(crate) struct CancelGuard {
    token: Option<CancelToken>,
    id: u64,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            token.lock().wakers.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Box<dyn FnOnce() + Send>) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        (count, move || {
            let c = c.clone();
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn a_registered_waker_runs_once_on_cancel_and_a_dropped_one_never() {
        let token = CancelToken::new();
        let (count, waker) = counter();
        let kept = token.on_cancel(waker());
        let dropped = token.on_cancel(waker());
        drop(dropped);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        token.cancel();
        token.cancel();
        assert!(token.is_cancelled());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        drop(kept);
    }

    #[test]
    fn registering_on_a_cancelled_token_wakes_at_once() {
        let token = CancelToken::new();
        token.clone().cancel();
        let (count, waker) = counter();
        let _guard = token.on_cancel(waker());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn empty_chunks_are_not_passed_on() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let watch = RunWatch::new()
            .on_output(move |stream, bytes| s.lock().unwrap().push((stream, bytes.to_vec())));
        watch.emit(Stream::Stdout, b"");
        watch.emit(Stream::Stderr, b"x");
        assert_eq!(*seen.lock().unwrap(), vec![(Stream::Stderr, b"x".to_vec())]);
    }
}
