//! Admission: who may run what, how often and how many at once.
//!
//! Owns the tenants (hashed bearer tokens, allowed policies and images, a cap
//! on concurrent runs, a token-bucket rate quota, a token-bucket CPU-seconds
//! quota) and the server-wide bounds (a cap on runs at once, a bound on
//! waiting work). Pure bookkeeping: nothing here runs code, touches the
//! network or the database.

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
    /// Image names this tenant may use; the first is its default.
    pub images: Vec<String>,
    /// Runs of this tenant at once (sync and jobs together).
    pub max_concurrent: usize,
    /// Sustained rate quota: runs (sync runs and job submissions) per minute.
    pub runs_per_minute: u32,
    /// How many runs may be started back to back before the rate applies.
    pub burst: u32,
    /// CPU-seconds quota, or `None` for none.
    pub cpu: Option<CpuQuota>,
}

/// A tenant's CPU-seconds quota: a token bucket of CPU seconds. Each run is
/// charged its measured CPU time when it ends; while the bucket is empty (or
/// in debt after a long run), new runs are refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuQuota {
    /// CPU seconds added per minute (positive).
    pub seconds_per_minute: f64,
    /// The bucket's size in CPU seconds (positive).
    pub burst_seconds: f64,
}

/// The sha256 of a bearer token, as stored in the configuration.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket: `capacity` tokens, refilled at `per_second`. Runs take
/// one token each; the CPU quota is charged after the fact and may go into
/// debt (negative tokens), which the refill pays back.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens (at least 1 is not required: the
    /// CPU bucket holds seconds), refilled with `per_minute` tokens a minute.
    fn new(per_minute: f64, capacity: f64) -> TokenBucket {
        TokenBucket {
            capacity,
            per_second: per_minute / 60.0,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// How long until the bucket holds more than `level` tokens.
    fn wait_until_above(&self, level: f64) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::from_secs(60);
        }
        let seconds = (level - self.tokens) / self.per_second;
        // Just past the moment the level is reached, so that a retry then succeeds.
        Duration::try_from_secs_f64(seconds.max(0.0))
            .unwrap_or(Duration::MAX)
            .saturating_add(Duration::from_millis(1))
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(self.wait_until_above(1.0))
    }

    /// Ok while the bucket holds anything; else how long until it does.
    fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens > 0.0 {
            return Ok(());
        }
        Err(self.wait_until_above(0.0))
    }

    /// Takes `amount` tokens, going into debt if there are fewer.
    fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.tokens -= amount;
    }
}

/// A tenant and its live counters.
#[derive(Debug)]
pub struct Tenant {
    /// What the configuration says.
    pub config: TenantConfig,
    in_flight: AtomicUsize,
    bucket: Mutex<TokenBucket>,
    cpu: Option<Mutex<TokenBucket>>,
}

/// Why admission said no.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// The tenant's runs used up its CPU-seconds quota for now.
    #[error(
        "tenant {tenant:?} has used up its quota of {per_minute} CPU seconds per minute; \
         retry in {}s", retry_after.as_secs_f64().ceil()
    )]
    Cpu {
        /// The tenant.
        tenant: String,
        /// Its quota.
        per_minute: f64,
        /// When the bucket holds CPU time again.
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

impl TenantSlot {
    /// Charges the run that held this slot its CPU time (see [`Tenant::charge_cpu`]).
    pub fn charge_cpu(&self, used: Duration) {
        self.0.charge_cpu(used);
    }
}

impl Tenant {
    /// A tenant with full buckets and nothing in flight.
    pub fn new(config: TenantConfig) -> Arc<Tenant> {
        let bucket = TokenBucket::new(
            f64::from(config.runs_per_minute),
            f64::from(config.burst.max(1)),
        );
        let cpu = config
            .cpu
            .map(|q| Mutex::new(TokenBucket::new(q.seconds_per_minute, q.burst_seconds)));
        Arc::new(Tenant {
            config,
            in_flight: AtomicUsize::new(0),
            bucket: Mutex::new(bucket),
            cpu,
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

    /// Refuses while the tenant's CPU-seconds bucket is empty (or in debt).
    pub fn check_cpu(&self) -> Result<(), Refusal> {
        let (Some(bucket), Some(quota)) = (&self.cpu, self.config.cpu) else {
            return Ok(());
        };
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket
            .check(Instant::now())
            .map_err(|retry_after| Refusal::Cpu {
                tenant: self.config.name.clone(),
                per_minute: quota.seconds_per_minute,
                retry_after,
            })
    }

    /// Charges a finished run's CPU time to the tenant's CPU-seconds quota.
    pub fn charge_cpu(&self, used: Duration) {
        if let Some(bucket) = &self.cpu {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            bucket.charge(used.as_secs_f64(), Instant::now());
        }
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

    /// Names of tenants that may not start a run now: at their concurrency
    /// cap, or with an empty CPU-seconds bucket. Job workers skip their jobs,
    /// which wait in the queue.
    pub fn tenants_at_cap(&self) -> Vec<String> {
        self.tenants
            .iter()
            .filter(|t| t.in_flight() >= t.config.max_concurrent || t.check_cpu().is_err())
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
            images: vec!["host".into()],
            max_concurrent,
            runs_per_minute: per_minute,
            burst,
            cpu: None,
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
        let mut bucket = TokenBucket::new(60.0, 2.0);
        let now = bucket.last;
        assert!(bucket.take(now).is_ok());
        assert!(bucket.take(now).is_ok());
        let wait = bucket.take(now).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_millis(1001));
        assert!(bucket.take(now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_cpu_bucket_is_charged_after_the_run_and_refuses_while_in_debt() {
        // 6 CPU seconds a minute (0.1 per second), 1 second of burst.
        let mut bucket = TokenBucket::new(6.0, 1.0);
        let now = bucket.last;
        assert!(bucket.check(now).is_ok());
        // A run that burned 1.5 s leaves the bucket 0.5 s in debt: 5 s to pay back.
        bucket.charge(1.5, now);
        let wait = bucket.check(now).unwrap_err();
        assert!(
            wait > Duration::from_millis(4_990) && wait <= Duration::from_millis(5_001),
            "{wait:?}"
        );
        assert!(bucket.check(now + Duration::from_secs(4)).is_err());
        assert!(bucket.check(now + wait).is_ok());
        // The refill stops at the burst.
        bucket.check(now + Duration::from_secs(3600)).unwrap();
        assert!((bucket.tokens - 1.0).abs() < 1e-9, "{}", bucket.tokens);
    }

    #[test]
    fn a_tenant_without_a_cpu_quota_is_never_refused_for_cpu() {
        let t = tenant(1, 60, 1);
        t.charge_cpu(Duration::from_secs(1_000_000));
        assert!(t.check_cpu().is_ok());
    }

    #[test]
    fn a_tenant_out_of_cpu_is_refused_and_its_jobs_wait() {
        let mut config = tenant(1, 60, 1).config.clone();
        config.cpu = Some(CpuQuota {
            seconds_per_minute: 0.6,
            burst_seconds: 0.5,
        });
        let admission = Admission::new(vec![config], 1, 1);
        let t = admission.tenant("t").unwrap();
        assert!(t.check_cpu().is_ok());
        assert!(admission.tenants_at_cap().is_empty());
        t.try_slot().unwrap().charge_cpu(Duration::from_secs(2));
        match t.check_cpu() {
            Err(Refusal::Cpu { retry_after, .. }) => {
                // 1.5 s of debt at 0.01 s per second.
                assert!(retry_after > Duration::from_secs(149), "{retry_after:?}");
                assert!(
                    retry_after <= Duration::from_millis(150_001),
                    "{retry_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(admission.tenants_at_cap(), ["t"]);
    }

    proptest::proptest! {
        /// Whatever the runs charge and however time passes, the bucket never
        /// holds more than its burst, and a refusal's Retry-After is exact: a
        /// check just before it fails, a check at it succeeds.
        #[test]
        fn retry_after_is_neither_early_nor_late(
            per_minute in 0.01f64..1000.0,
            burst in 0.01f64..100.0,
            steps in proptest::collection::vec((0u64..120_000, 0.0f64..50.0), 1..20),
        ) {
            let mut bucket = TokenBucket::new(per_minute, burst);
            let mut now = bucket.last;
            for (advance_ms, charged) in steps {
                now += Duration::from_millis(advance_ms);
                match bucket.check(now) {
                    Ok(()) => proptest::prop_assert!(bucket.tokens > 0.0),
                    Err(wait) => {
                        proptest::prop_assert!(bucket.tokens <= 0.0);
                        let mut probe = bucket.clone();
                        if wait > Duration::from_millis(2) {
                            let early = now + wait - Duration::from_millis(2);
                            proptest::prop_assert!(probe.check(early).is_err(), "ok before {wait:?}");
                        }
                        proptest::prop_assert!(probe.check(now + wait).is_ok(), "refused at {wait:?}");
                    }
                }
                bucket.charge(charged, now);
                proptest::prop_assert!(bucket.tokens <= burst + 1e-9);
            }
        }
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
