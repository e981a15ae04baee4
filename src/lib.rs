//! pyward: a sandbox executor for untrusted Python.
//!
//! A [`Submission`] goes in, an [`Outcome`] comes out; a [`SandboxPolicy`]
//! says what the program may do.
#![deny(missing_docs)]

mod api;
mod arch;
mod doctor;
mod executor;
mod image;
mod policy;
mod runtime;
mod seccomp;
#[doc(hidden)]
pub mod sys;

/// The gRPC contract (proto/pyward/v1/pyward.proto): its messages, and a
/// client (`proto::pyward_client::PywardClient`) for any tonic channel.
pub use api::grpc::proto;
pub use api::{ConfigError, ImageConfig, RuntimeKind, ServeConfig, ServeError, serve};
pub use arch::{Arch, UnknownArch};
pub use doctor::{
    Check as DoctorCheck, CheckStatus as DoctorStatus, DoctorOptions, can_run as doctor_can_run,
    check_host as doctor_check_host, native_checks as doctor_native_checks,
};
pub use executor::images::{HOST_IMAGE, OfferedImage, RouteError, Target};
pub use executor::{ExecError, Executor};
pub use image::{
    ArchReport, BuildOptions, BuildReport, BuiltArch, Cache as ImageCache, DEFAULT_CACHE_DIR,
    DEFAULT_RESOLVE_TTL, Hardening, ImageEntry, ImageError, RECIPE_HASH_LABEL, Recipe,
    ResolutionSource, SANDBOX_ID, Variant, build as build_image, content_key, docker_repository,
    docker_tags, list as list_images, parse_simulate, remove as remove_image,
};
pub use policy::*;
pub use runtime::docker::{
    DEFAULT_IMAGE as DEFAULT_DOCKER_IMAGE, DockerConfig, DockerError, DockerRuntime,
    DockerWarmConfig, DockerWarmRuntime,
};
pub use runtime::native::{NativeConfig, NativeError, NativeRuntime, WarmConfig, WarmRuntime};
pub use runtime::{CancelToken, RunError, RunWatch, Runtime, Stream};
pub use runtime::{
    Captured, Entrypoint, InputFile, LimitReached, Outcome, Submission, Usage, Verdict,
};
pub use runtime::{MAX_OUTPUT_PATH, MAX_OUTPUTS, OutputFile, OutputStatus};
pub use runtime::{
    OutcomeJson, OutcomeJsonError, OutputFileJson, OutputStatusJson, StreamEncoding, UsageJson,
    signal_name,
};
pub use seccomp::{
    Allowlist, Answer, AnswerErrno, ArgCondition, ArgOp, ArgProblem, BUILTIN_ALLOWLISTS,
    SeccompError, SeccompProgram, SyscallRule, answered_syscalls, compile as compile_seccomp,
    dangerous_syscalls, docker_profile as seccomp_docker_profile,
};
