//! Applying a request to a policy: limit overrides may only tighten, and
//! environment variables must be allowed by name.

use std::collections::BTreeMap;

use super::error::PolicyError;
use super::rules::{FieldError, check_cpus, is_env_name};
use super::types::{LimitOverrides, Limits, SandboxPolicy};
use super::units::format_duration;

/// Applies one override: refuses a looser value, else takes it.
fn tighten<T: PartialOrd + Copy>(
    policy: &SandboxPolicy,
    field: &str,
    current: &mut T,
    requested: Option<T>,
    show: impl Fn(T) -> String,
) -> Result<(), PolicyError> {
    let Some(requested) = requested else {
        return Ok(());
    };
    if requested > *current {
        return Err(PolicyError::Loosen {
            policy_name: policy.name.clone(),
            field: field.to_owned(),
            policy: show(*current),
            requested: show(requested),
        });
    }
    *current = requested;
    Ok(())
}

impl SandboxPolicy {
    /// This policy with a request's limits applied.
    ///
    /// Each override must be at most the policy's value (equal is fine) and
    /// still in the range every policy keeps (e.g. memory at least 32MiB);
    /// a looser one is refused with [`PolicyError::Loosen`], naming the field,
    /// the policy's value and the requested one.
    pub fn tightened(&self, overrides: &LimitOverrides) -> Result<SandboxPolicy, PolicyError> {
        let o = overrides;
        if let Some(cpus) = o.cpus {
            check_cpus(cpus).map_err(invalid_override)?;
        }
        let mut l: Limits = self.limits.clone();
        let dur = format_duration;
        let size = |s: super::types::ByteSize| s.to_string();
        let int = |n: u32| n.to_string();
        tighten(self, "limits.wall_time", &mut l.wall_time, o.wall_time, dur)?;
        tighten(self, "limits.cpu_time", &mut l.cpu_time, o.cpu_time, dur)?;
        tighten(self, "limits.memory", &mut l.memory, o.memory, size)?;
        tighten(self, "limits.pids", &mut l.pids, o.pids, int)?;
        tighten(
            self,
            "limits.open_files",
            &mut l.open_files,
            o.open_files,
            int,
        )?;
        tighten(
            self,
            "limits.file_size",
            &mut l.file_size,
            o.file_size,
            size,
        )?;
        tighten(self, "limits.output", &mut l.output, o.output, size)?;
        tighten(self, "limits.tmpfs", &mut l.tmpfs, o.tmpfs, size)?;
        tighten(self, "limits.cpus", &mut l.cpus, o.cpus, |c: f64| {
            c.to_string()
        })?;
        l.check().map_err(invalid_override)?;
        Ok(SandboxPolicy {
            limits: l,
            ..self.clone()
        })
    }

    /// Checks a request's environment: every name must be in `env.allow`
    /// and every value must be free of NUL bytes.
    pub fn check_env(&self, requested: &BTreeMap<String, String>) -> Result<(), PolicyError> {
        for (name, value) in requested {
            if !is_env_name(name) || !self.env.allow.contains(name) {
                return Err(PolicyError::EnvNotAllowed {
                    name: name.clone(),
                    allowed: self.env.allow.clone(),
                });
            }
            if value.contains('\0') {
                return Err(PolicyError::EnvValueHasNul { name: name.clone() });
            }
        }
        Ok(())
    }

    /// The program's whole environment, sorted by name: the policy's
    /// `env.set`, then the requested values the policy allows (overriding).
    ///
    /// Call [`SandboxPolicy::check_env`] first to refuse a bad request; names
    /// it would refuse are left out here, never passed through.
    pub fn environment(&self, requested: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let allowed = requested.iter().filter(|(name, value)| {
            is_env_name(name) && self.env.allow.contains(*name) && !value.contains('\0')
        });
        let mut env = self.env.set.clone();
        env.extend(allowed.map(|(n, v)| (n.clone(), v.clone())));
        env.into_iter().collect()
    }
}

fn invalid_override(
    FieldError {
        field,
        value,
        allowed,
    }: FieldError,
) -> PolicyError {
    PolicyError::InvalidOverride {
        field,
        value,
        allowed,
    }
}
