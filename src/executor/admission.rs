//! Admission: who may run what, how often and how many at once.
//!
//! Owns the tenants (hashed bearer tokens, allowed policies, a cap on
//! concurrent runs, a token-bucket rate quota) and the server-wide bounds (a
//! cap on runs at once, a bound on waiting work). Pure bookkeeping: nothing
//! here runs code, touches the network or the database.

use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A tenant as the configuration describes it.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The tenant's name (logs, metrics, job ownership).
    pub name: String,
    /// sha256 of each accepted bearer token; empty for the one anonymous tenant.
    pub token_hashes: Vec<[u8; 32]>,
    /// Policy names this tenant may use; the first is its default.
    pub policies: Vec<String>,
    /// Runs of this tenant at once (sync and jobs together).
    pub max_concurrent: usize,
    /// Sustained rate quota: runs (sync runs and job submissions) per minute.
    pub runs_per_minute: u32,
    /// How many runs may be started back to back before the rate applies.
    pub burst: u32,
}

/// The sha256 of a bearer token, as stored in the configuration.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket: `capacity` tokens, refilled at `per_second`.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(runs_per_minute: u32, burst: u32) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_second: f64::from(runs_per_minute) / 60.0,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(Duration::from_secs(60));
        }
        Err(Duration::from_secs_f64(
            (1.0 - self.tokens) / self.per_second,
        ))
    }
}

/// A tenant and its live counters.
#[derive(Debug)]
pub struct Tenant {
    /// What the configuration says.
    pub config: TenantConfig,
    in_flight: AtomicUsize,
    bucket: Mutex<TokenBucket>,
}

/// Why admission said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The tenant is at its cap of concurrent runs.
    #[error("tenant {tenant:?} already has {max} runs in flight, its maximum")]
    Concurrency {
        /// The tenant.
        tenant: String,
        /// Its cap.
        max: usize,
    },
    /// The tenant's rate quota is used up for now.
    #[error("tenant {tenant:?} is over its quota of {per_minute} runs per minute")]
    Rate {
        /// The tenant.
        tenant: String,
        /// Its quota.
        per_minute: u32,
        /// When a token is back.
        retry_after: Duration,
    },
}

/// A slot in a tenant's concurrency cap, given back on drop.
#[derive(Debug)]
pub struct TenantSlot(Arc<Tenant>);

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tenant {
    /// A tenant with full buckets and nothing in flight.
    pub fn new(config: TenantConfig) -> Arc<Tenant> {
        let bucket = TokenBucket::new(config.runs_per_minute, config.burst);
        Arc::new(Tenant {
            config,
            in_flight: AtomicUsize::new(0),
            bucket: Mutex::new(bucket),
        })
    }

    /// Whether `hash` is one of this tenant's token hashes (every hash is compared).
    pub fn accepts(&self, hash: &[u8; 32]) -> bool {
        self.config
            .token_hashes
            .iter()
            .fold(false, |found, known| constant_time_eq(known, hash) | found)
    }

    /// Whether the tenant may use the policy named `name`.
    pub fn allows_policy(&self, name: &str) -> bool {
        self.config.policies.iter().any(|p| p == name)
    }

    /// Runs of this tenant in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a concurrency slot, or refuses when the tenant is at its cap.
    pub fn try_slot(self: &Arc<Tenant>) -> Result<TenantSlot, Refusal> {
        let max = self.config.max_concurrent;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| TenantSlot(self.clone()))
            .map_err(|_| Refusal::Concurrency {
                tenant: self.config.name.clone(),
                max,
            })
    }

    /// Spends one run of the rate quota, or refuses with when to retry.
    pub fn take_rate(&self) -> Result<(), Refusal> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket
            .take(Instant::now())
            .map_err(|retry_after| Refusal::Rate {
                tenant: self.config.name.clone(),
                per_minute: self.config.runs_per_minute,
                retry_after,
            })
    }
}

/// All tenants and the server-wide bounds.
#[derive(Debug)]
pub struct Admission {
    tenants: Vec<Arc<Tenant>>,
    /// Permits for runs at once, server-wide (sync runs and job workers).
    pub running: Arc<Semaphore>,
    /// The number of permits `running` started with.
    pub max_running: usize,
    /// Queued jobs plus sync runs waiting for a permit may not exceed this.
    pub queue_bound: usize,
    waiting_sync: AtomicUsize,
}

/// A sync run's place in the wait for a run permit, given back on drop.
#[derive(Debug)]
pub struct WaitSlot<'a>(&'a AtomicUsize);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission for `tenants`, with `max_running` runs at once and at most
    /// `queue_bound` waiting.
    pub fn new(tenants: Vec<TenantConfig>, max_running: usize, queue_bound: usize) -> Admission {
        Admission {
            tenants: tenants.into_iter().map(Tenant::new).collect(),
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            queue_bound,
            waiting_sync: AtomicUsize::new(0),
        }
    }

    /// The tenant that owns `token`, comparing hashes in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Tenant>> {
        let hash = hash_token(token);
        let mut found = None;
        for tenant in &self.tenants {
            if tenant.accepts(&hash) {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// The anonymous tenant, when the server runs without auth.
    pub fn anonymous(&self) -> Option<Arc<Tenant>> {
        match self.tenants.as_slice() {
            [only] if only.config.token_hashes.is_empty() => Some(only.clone()),
            _ => None,
        }
    }

    /// The tenant named `name`.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.iter().find(|t| t.config.name == name).cloned()
    }

    /// Names of tenants at their concurrency cap (job workers skip their jobs).
    pub fn tenants_at_cap(&self) -> Vec<String> {
        self.tenants
            .iter()
            .filter(|t| t.in_flight() >= t.config.max_concurrent)
            .map(|t| t.config.name.clone())
            .collect()
    }

    /// A place among the sync runs waiting for a permit, if `queued_jobs`
    /// plus those waiting leave room under the queue bound.
    pub fn try_wait(&self, queued_jobs: usize) -> Option<WaitSlot<'_>> {
        let bound = self.queue_bound.saturating_sub(queued_jobs);
        self.waiting_sync
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitSlot(&self.waiting_sync))
    }

    /// Runs in flight now, server-wide.
    pub fn in_flight(&self) -> usize {
        self.max_running - self.running.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(max_concurrent: usize, per_minute: u32, burst: u32) -> Arc<Tenant> {
        Tenant::new(TenantConfig {
            name: "t".into(),
            token_hashes: vec![hash_token("secret")],
            policies: vec!["strict".into()],
            max_concurrent,
            runs_per_minute: per_minute,
            burst,
        })
    }

    #[test]
    fn tokens_match_by_hash_only() {
        let admission = Admission::new(vec![tenant(1, 60, 1).config.clone()], 1, 1);
        assert!(admission.authenticate("secret").is_some());
        assert!(admission.authenticate("secret ").is_none());
        assert!(admission.authenticate("").is_none());
        assert!(admission.anonymous().is_none());
    }

    #[test]
    fn the_bucket_refuses_past_the_burst_and_says_when() {
        let mut bucket = TokenBucket::new(60, 2);
        let now = bucket.last;
        assert!(bucket.take(now).is_ok());
        assert!(bucket.take(now).is_ok());
        let wait = bucket.take(now).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(bucket.take(now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn slots_cap_concurrency_and_come_back_on_drop() {
        let t = tenant(2, 60, 1);
        let a = t.try_slot().unwrap();
        let _b = t.try_slot().unwrap();
        assert!(matches!(
            t.try_slot(),
            Err(Refusal::Concurrency { max: 2, .. })
        ));
        drop(a);
        assert!(t.try_slot().is_ok());
    }

    #[test]
    fn waiting_is_bounded_by_the_queue_bound_minus_queued_jobs() {
        let admission = Admission::new(vec![], 1, 3);
        let _a = admission.try_wait(1).unwrap();
        let _b = admission.try_wait(1).unwrap();
        assert!(admission.try_wait(1).is_none());
        assert!(admission.try_wait(3).is_none());
    }
}
