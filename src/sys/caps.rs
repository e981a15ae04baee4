//! Dropping capabilities: the bounding set by prctl, the others with `caps`.

use caps::CapSet;

/// Removes every capability from the bounding set. Needs CAP_SETPCAP, so it runs
/// before the switch to the sandbox user. Allocation-free.
pub fn drop_bounding_set() -> Result<(), nix::Error> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let err = nix::Error::last();
            // EINVAL: `cap` is past the last capability this kernel knows.
            return if err == nix::Error::EINVAL {
                Ok(())
            } else {
                Err(err)
            };
        }
    }
    Ok(())
}

/// Clears the ambient, inheritable, permitted and effective sets.
/// Allocation-free on success (the `caps` crate formats only its errors).
pub fn clear_all() -> Result<(), &'static str> {
    caps::clear(None, CapSet::Ambient).map_err(|_| "ambient")?;
    caps::clear(None, CapSet::Inheritable).map_err(|_| "inheritable")?;
    caps::clear(None, CapSet::Permitted).map_err(|_| "permitted")?;
    caps::clear(None, CapSet::Effective).map_err(|_| "effective")?;
    Ok(())
}
