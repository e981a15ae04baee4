//! CPU architectures pyward builds images for and runs code on.
//!
//! Pure data: the names used on the command line, in the API and in image
//! metadata, and the mapping to the kernel's and Docker's spellings.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A CPU architecture, named as Debian and Docker name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64 (`x86_64` to the kernel).
    Amd64,
    /// 64-bit ARM (`aarch64` to the kernel).
    Arm64,
}

impl Arch {
    /// Every architecture pyward supports.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The architecture this binary was compiled for.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// Debian's and Docker's name: `amd64`, `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The kernel's name, as `uname -m` and Python's `platform.machine()` print it.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An architecture name that pyward does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture {0:?}: expected one of amd64, arm64 (or x86_64, aarch64)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(UnknownArch(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_and_refuses_others() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        let err = "riscv64".parse::<Arch>().unwrap_err().to_string();
        assert!(
            err.contains("riscv64") && err.contains("amd64, arm64"),
            "{err}"
        );
    }
}
