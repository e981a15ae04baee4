//! Tests of the policy module: the shipped files, the file format's
//! validation, units, tightening, environment rules, loading and round trips.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const SRC: &str = "test.toml";

fn parse(text: &str) -> Result<SandboxPolicy, PolicyError> {
    SandboxPolicy::from_toml("test", text, SRC)
}

fn env_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strict_env_set() -> BTreeMap<String, String> {
    env_map(&[
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/tmp"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
    ])
}

// ---- the shipped policies -------------------------------------------------

#[test]
fn strict_file_has_the_documented_values() {
    let p = SandboxPolicy::builtin("strict").unwrap();
    assert_eq!(p.name, "strict");
    assert!(!p.description.is_empty());
    let expected = Limits {
        wall_time: Duration::from_secs(10),
        cpu_time: Duration::from_secs(5),
        memory: ByteSize(256 << 20),
        pids: 32,
        open_files: 64,
        file_size: ByteSize(16 << 20),
        output: ByteSize(1 << 20),
        tmpfs: ByteSize(16 << 20),
        cpus: 1.0,
    };
    assert_eq!(p.limits, expected);
    assert_eq!(p.network, Network::None);
    assert_eq!(p.env.set, strict_env_set());
    assert!(p.env.allow.is_empty());
    assert_eq!(p.seccomp.allowlist, "python-strict");
    assert_eq!(p.seccomp.denied, DeniedAction::Errno);
    assert_eq!(
        p.user,
        SandboxUser {
            uid: 65534,
            gid: 65534
        }
    );
}

#[test]
fn standard_file_has_the_documented_values() {
    let p = SandboxPolicy::builtin("standard").unwrap();
    assert_eq!(p.name, "standard");
    let expected = Limits {
        wall_time: Duration::from_secs(60),
        cpu_time: Duration::from_secs(30),
        memory: ByteSize(1 << 30),
        pids: 128,
        open_files: 256,
        file_size: ByteSize(128 << 20),
        output: ByteSize(8 << 20),
        tmpfs: ByteSize(64 << 20),
        cpus: 2.0,
    };
    assert_eq!(p.limits, expected);
    assert_eq!(p.network, Network::None);
    assert_eq!(p.env.set, strict_env_set());
    assert_eq!(p.env.allow, ["PYTHONHASHSEED", "TZ", "LANG", "LC_ALL"]);
    assert_eq!(p.seccomp.allowlist, "python-standard");
    assert_eq!(p.seccomp.denied, DeniedAction::Errno);
    assert_eq!(
        p.user,
        SandboxUser {
            uid: 65534,
            gid: 65534
        }
    );
}

#[test]
fn strict_file_matches_the_code_defaults() {
    let file = SandboxPolicy::builtin("strict").unwrap();
    assert_eq!(file.limits, Limits::strict());
    assert_eq!(file.network, Network::strict());
    assert_eq!(file.env, EnvPolicy::strict());
    assert_eq!(file.seccomp, SeccompSettings::strict());
    assert_eq!(file.user, SandboxUser::strict());
}

#[test]
fn an_empty_file_takes_every_strict_default() {
    let empty = SandboxPolicy::from_toml("strict", "", SRC).unwrap();
    let strict = SandboxPolicy::builtin("strict").unwrap();
    assert_eq!(
        empty,
        SandboxPolicy {
            description: String::new(),
            ..strict
        }
    );
}

#[test]
fn omitted_fields_take_strict_defaults_field_by_field() {
    let p = parse("[limits]\nmemory = \"64MiB\"\n[env]\nallow = [\"TZ\"]\n").unwrap();
    assert_eq!(
        p.limits,
        Limits {
            memory: ByteSize::mib(64),
            ..Limits::strict()
        }
    );
    assert_eq!(p.env.set, strict_env_set());
    assert_eq!(p.env.allow, ["TZ"]);
}

#[test]
fn builtin_policies_lists_every_builtin() {
    for name in BUILTIN_POLICIES {
        assert_eq!(SandboxPolicy::builtin(name).unwrap().name, *name);
    }
}

// ---- refused files --------------------------------------------------------

#[test]
fn unknown_fields_are_refused_by_name_with_the_file_name() {
    for (text, field) in [
        ("memry = \"1GiB\"", "memry"),
        ("[limits]\nmemry = \"1GiB\"", "memry"),
        ("[env]\nallowed = []", "allowed"),
        ("[seccomp]\ndefault = \"kill\"", "default"),
        ("[user]\nname = \"nobody\"", "name"),
        ("[sandbox]\nmode = \"none\"", "sandbox"),
    ] {
        let err = parse(text).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PolicyError::Parse { .. }), "{text}: {err:?}");
        assert!(msg.contains(&format!("`{field}`")), "{text}: {msg}");
        assert!(msg.starts_with(SRC), "{msg}");
    }
}

#[test]
fn toml_errors_keep_the_line_and_the_file_name() {
    let err = parse("description = \"x\"\n[limits]\npids = \"many\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(SRC) && msg.contains("line 3"), "{msg}");

    let err = parse("[limits\n").unwrap_err();
    assert!(matches!(&err, PolicyError::Parse { source_name, .. } if source_name == SRC));
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// Each invalid value: (file text, the field named, a piece of the allowed text).
const INVALID: &[(&str, &str, &str)] = &[
    ("description = \"two\\nlines\"", "description", "one line"),
    ("network = \"host\"", "network", "none, loopback"),
    (
        "[limits]\nwall_time = \"0s\"",
        "limits.wall_time",
        "1ms to 24h",
    ),
    (
        "[limits]\nwall_time = \"25h\"",
        "limits.wall_time",
        "1ms to 24h",
    ),
    (
        "[limits]\nwall_time = \"10\"",
        "limits.wall_time",
        "ms, s, m, h",
    ),
    (
        "[limits]\nwall_time = \"10sec\"",
        "limits.wall_time",
        "ms, s, m, h",
    ),
    (
        "[limits]\ncpu_time = \"1.5s\"",
        "limits.cpu_time",
        "ms, s, m, h",
    ),
    (
        "[limits]\ncpu_time = \"0ms\"",
        "limits.cpu_time",
        "1ms to 24h",
    ),
    (
        "[limits]\nmemory = \"16MiB\"",
        "limits.memory",
        "32MiB to 1024GiB",
    ),
    (
        "[limits]\nmemory = \"256M\"",
        "limits.memory",
        "B, KiB, MiB, GiB",
    ),
    (
        "[limits]\nmemory = \"256MB\"",
        "limits.memory",
        "B, KiB, MiB, GiB",
    ),
    (
        "[limits]\nmemory = \"1.5GiB\"",
        "limits.memory",
        "B, KiB, MiB, GiB",
    ),
    (
        "[limits]\nmemory = -5",
        "limits.memory",
        "integer number of bytes",
    ),
    (
        "[limits]\nmemory = \"2048GiB\"",
        "limits.memory",
        "32MiB to 1024GiB",
    ),
    ("[limits]\npids = 0", "limits.pids", "1 to 65536"),
    ("[limits]\npids = 65537", "limits.pids", "1 to 65536"),
    ("[limits]\npids = -1", "limits.pids", "1 to 65536"),
    (
        "[limits]\nopen_files = 8",
        "limits.open_files",
        "16 to 1048576",
    ),
    (
        "[limits]\nfile_size = \"2TiB\"",
        "limits.file_size",
        "B, KiB, MiB, GiB",
    ),
    (
        "[limits]\noutput = \"512B\"",
        "limits.output",
        "1KiB to 1GiB",
    ),
    (
        "[limits]\noutput = \"2GiB\"",
        "limits.output",
        "1KiB to 1GiB",
    ),
    (
        "[limits]\ntmpfs = \"32KiB\"",
        "limits.tmpfs",
        "64KiB to 1024GiB",
    ),
    (
        "[limits]\ncpus = 0.0",
        "limits.cpus",
        "more than 0 and at most 1024",
    ),
    (
        "[limits]\ncpus = -1",
        "limits.cpus",
        "more than 0 and at most 1024",
    ),
    (
        "[limits]\ncpus = 1025",
        "limits.cpus",
        "more than 0 and at most 1024",
    ),
    (
        "[limits]\ncpus = nan",
        "limits.cpus",
        "more than 0 and at most 1024",
    ),
    (
        "[limits]\ncpus = inf",
        "limits.cpus",
        "more than 0 and at most 1024",
    ),
    (
        "[env]\nset = { 1BAD = \"x\" }",
        "env.set",
        "[A-Za-z_][A-Za-z0-9_]*",
    ),
    (
        "[env]\nset = { A = \"a\\u0000b\" }",
        "env.set.A",
        "without NUL",
    ),
    (
        "[env]\nallow = [\"LD_PRELOAD\"]",
        "env.allow",
        "other than LD_*",
    ),
    (
        "[env]\nallow = [\"LD_LIBRARY_PATH\"]",
        "env.allow",
        "other than LD_*",
    ),
    (
        "[env]\nallow = [\"PYTHONPATH\"]",
        "env.allow",
        "PYTHONSTARTUP",
    ),
    (
        "[env]\nallow = [\"PYTHONSTARTUP\"]",
        "env.allow",
        "PYTHONPATH",
    ),
    (
        "[env]\nallow = [\"GLIBC_TUNABLES\"]",
        "env.allow",
        "GCONV_PATH",
    ),
    (
        "[env]\nallow = [\"BAD-NAME\"]",
        "env.allow",
        "[A-Za-z_][A-Za-z0-9_]*",
    ),
    (
        "[env]\nallow = [\"\"]",
        "env.allow",
        "[A-Za-z_][A-Za-z0-9_]*",
    ),
    (
        "[seccomp]\nallowlist = \"../etc/passwd\"",
        "seccomp.allowlist",
        "[a-z0-9-]+",
    ),
    (
        "[seccomp]\nallowlist = \"Python\"",
        "seccomp.allowlist",
        "[a-z0-9-]+",
    ),
    (
        "[seccomp]\nallowlist = \"\"",
        "seccomp.allowlist",
        "[a-z0-9-]+",
    ),
    (
        "[seccomp]\ndenied = \"log\"",
        "seccomp.denied",
        "errno, kill",
    ),
    ("[user]\nuid = 0", "user.uid", "1 to 65535"),
    ("[user]\nuid = -1", "user.uid", "1 to 65535"),
    ("[user]\ngid = 0", "user.gid", "1 to 65535"),
    ("[user]\ngid = 65536", "user.gid", "1 to 65535"),
];

#[test]
fn each_invalid_value_names_its_field_and_what_is_allowed() {
    for (text, want_field, want_allowed) in INVALID {
        let err = parse(text).unwrap_err();
        let msg = err.to_string();
        let PolicyError::InvalidField {
            source_name,
            field,
            allowed,
            ..
        } = &err
        else {
            panic!("{text}: expected InvalidField, got {err:?}");
        };
        assert_eq!(source_name, SRC, "{text}");
        assert_eq!(field, want_field, "{text}");
        assert!(
            allowed.contains(want_allowed),
            "{text}: allowed = {allowed}"
        );
        assert!(
            msg.contains(SRC) && msg.contains(want_field),
            "{text}: {msg}"
        );
    }
}

#[test]
fn the_edges_of_each_range_are_accepted() {
    let text = r#"
        [limits]
        wall_time = "1ms"
        cpu_time = "24h"
        memory = "32MiB"
        pids = 65536
        open_files = 16
        file_size = 0
        output = "1KiB"
        tmpfs = "64KiB"
        cpus = 1024
        [user]
        uid = 1
        gid = 65535
    "#;
    let p = parse(text).unwrap();
    assert_eq!(p.limits.wall_time, Duration::from_millis(1));
    assert_eq!(p.limits.cpu_time, Duration::from_secs(24 * 3600));
    assert_eq!(p.limits.memory, ByteSize::mib(32));
    assert_eq!(p.limits.file_size, ByteSize(0));
    assert_eq!(p.limits.cpus, 1024.0);
    assert_eq!(p.user, SandboxUser { uid: 1, gid: 65535 });
}

#[test]
fn sizes_may_be_plain_byte_counts() {
    let p = parse("[limits]\nmemory = 67108864\noutput = \"4096\"\n").unwrap();
    assert_eq!(p.limits.memory, ByteSize::mib(64));
    assert_eq!(p.limits.output, ByteSize::kib(4));
}

// ---- units ----------------------------------------------------------------

#[test]
fn byte_sizes_parse_with_exact_units() {
    for (text, bytes) in [
        ("0", 0),
        ("1048576", 1 << 20),
        ("100B", 100),
        ("512KiB", 512 << 10),
        ("256MiB", 256 << 20),
        ("1GiB", 1 << 30),
        (" 256 MiB ", 256 << 20),
    ] {
        assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
    }
}

#[test]
fn byte_size_errors_name_the_allowed_units() {
    for (text, unit) in [
        ("256M", "M"),
        ("1G", "G"),
        ("4K", "K"),
        ("1MB", "MB"),
        ("1mib", "mib"),
        ("1TiB", "TiB"),
    ] {
        let err = text.parse::<ByteSize>().unwrap_err();
        assert_eq!(
            err,
            UnitError::UnknownUnit {
                kind: QuantityKind::Size,
                input: text.into(),
                unit: unit.into()
            }
        );
        assert!(err.to_string().contains("B, KiB, MiB, GiB"), "{err}");
    }
    for text in ["", "MiB", "-1", "+5", "1.5GiB", "0x10"] {
        let err = text.parse::<ByteSize>().unwrap_err();
        assert!(
            matches!(
                err,
                UnitError::Malformed { .. } | UnitError::UnknownUnit { .. }
            ),
            "{text}: {err:?}"
        );
        assert!(
            err.to_string().contains("B, KiB, MiB, GiB"),
            "{text}: {err}"
        );
    }
    for text in ["99999999999999999999", "17179869184GiB"] {
        assert!(
            matches!(text.parse::<ByteSize>(), Err(UnitError::TooLarge { .. })),
            "{text}"
        );
    }
}

#[test]
fn durations_parse_with_exact_units() {
    for (text, ms) in [
        ("500ms", 500),
        ("10s", 10_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("0ms", 0),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
}

#[test]
fn duration_errors_name_the_allowed_units() {
    let err = parse_duration("10").unwrap_err();
    assert!(matches!(err, UnitError::MissingUnit { .. }), "{err:?}");
    for text in ["10S", "10sec", "1d", "5us", "1.5s", "", "-1s"] {
        let err = parse_duration(text).unwrap_err();
        assert_eq!(err.kind(), QuantityKind::Duration);
        assert!(err.to_string().contains("ms, s, m, h"), "{text}: {err}");
    }
    assert!(matches!(
        parse_duration("18446744073709551615h"),
        Err(UnitError::TooLarge { .. })
    ));
}

#[test]
fn durations_and_sizes_print_back_in_a_form_that_parses() {
    for ms in [1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 86_400_000] {
        let d = Duration::from_millis(ms);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}ms");
    }
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    for bytes in [
        0,
        1,
        1023,
        1024,
        1536,
        1 << 20,
        (1 << 20) + 1,
        1 << 30,
        3 << 30,
    ] {
        let size = ByteSize(bytes);
        assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size), "{bytes}");
    }
}

// ---- tightening -----------------------------------------------------------

/// One row per limit: the field, an override tighter than standard's,
/// standard's own value, and a looser one.
struct TightenCase {
    field: &'static str,
    tighter: LimitOverrides,
    equal: LimitOverrides,
    looser: LimitOverrides,
    /// The policy's value and the looser request, as the error shows them.
    shown: (&'static str, &'static str),
    /// Reads the field back.
    get: fn(&Limits) -> String,
}

fn tighten_cases() -> Vec<TightenCase> {
    fn o(f: impl FnOnce(&mut LimitOverrides)) -> LimitOverrides {
        let mut overrides = LimitOverrides::default();
        f(&mut overrides);
        overrides
    }
    let secs = Duration::from_secs;
    vec![
        TightenCase {
            field: "limits.wall_time",
            tighter: o(|o| o.wall_time = Some(secs(2))),
            equal: o(|o| o.wall_time = Some(secs(60))),
            looser: o(|o| o.wall_time = Some(secs(61))),
            shown: ("1m", "61s"),
            get: |l| format_duration(l.wall_time),
        },
        TightenCase {
            field: "limits.cpu_time",
            tighter: o(|o| o.cpu_time = Some(secs(2))),
            equal: o(|o| o.cpu_time = Some(secs(30))),
            looser: o(|o| o.cpu_time = Some(secs(31))),
            shown: ("30s", "31s"),
            get: |l| format_duration(l.cpu_time),
        },
        TightenCase {
            field: "limits.memory",
            tighter: o(|o| o.memory = Some(ByteSize::mib(128))),
            equal: o(|o| o.memory = Some(ByteSize::gib(1))),
            looser: o(|o| o.memory = Some(ByteSize::gib(2))),
            shown: ("1GiB", "2GiB"),
            get: |l| l.memory.to_string(),
        },
        TightenCase {
            field: "limits.pids",
            tighter: o(|o| o.pids = Some(4)),
            equal: o(|o| o.pids = Some(128)),
            looser: o(|o| o.pids = Some(129)),
            shown: ("128", "129"),
            get: |l| l.pids.to_string(),
        },
        TightenCase {
            field: "limits.open_files",
            tighter: o(|o| o.open_files = Some(32)),
            equal: o(|o| o.open_files = Some(256)),
            looser: o(|o| o.open_files = Some(257)),
            shown: ("256", "257"),
            get: |l| l.open_files.to_string(),
        },
        TightenCase {
            field: "limits.file_size",
            tighter: o(|o| o.file_size = Some(ByteSize::mib(1))),
            equal: o(|o| o.file_size = Some(ByteSize::mib(128))),
            looser: o(|o| o.file_size = Some(ByteSize::mib(129))),
            shown: ("128MiB", "129MiB"),
            get: |l| l.file_size.to_string(),
        },
        TightenCase {
            field: "limits.output",
            tighter: o(|o| o.output = Some(ByteSize::kib(64))),
            equal: o(|o| o.output = Some(ByteSize::mib(8))),
            looser: o(|o| o.output = Some(ByteSize::mib(9))),
            shown: ("8MiB", "9MiB"),
            get: |l| l.output.to_string(),
        },
        TightenCase {
            field: "limits.tmpfs",
            tighter: o(|o| o.tmpfs = Some(ByteSize::mib(1))),
            equal: o(|o| o.tmpfs = Some(ByteSize::mib(64))),
            looser: o(|o| o.tmpfs = Some(ByteSize::mib(65))),
            shown: ("64MiB", "65MiB"),
            get: |l| l.tmpfs.to_string(),
        },
        TightenCase {
            field: "limits.cpus",
            tighter: o(|o| o.cpus = Some(0.5)),
            equal: o(|o| o.cpus = Some(2.0)),
            looser: o(|o| o.cpus = Some(2.5)),
            shown: ("2", "2.5"),
            get: |l| l.cpus.to_string(),
        },
    ]
}

#[test]
fn every_limit_can_be_tightened_or_kept_but_never_loosened() {
    let standard = SandboxPolicy::builtin("standard").unwrap();
    let cases = tighten_cases();
    assert_eq!(cases.len(), 9, "one case per field of Limits");
    for case in cases {
        let field = case.field;

        let tight = standard.tightened(&case.tighter).unwrap();
        assert_ne!(
            (case.get)(&tight.limits),
            (case.get)(&standard.limits),
            "{field}"
        );
        // Only that field moved.
        let mut restored = tight.clone();
        restored.limits = standard.limits.clone();
        assert_eq!(restored, standard, "{field}");
        assert!(
            tight.tightened(&case.equal).is_err(),
            "{field}: the tightened policy is the new ceiling"
        );

        assert_eq!(
            standard.tightened(&case.equal).unwrap(),
            standard,
            "{field}"
        );

        let err = standard.tightened(&case.looser).unwrap_err();
        let PolicyError::Loosen {
            policy_name,
            field: f,
            policy,
            requested,
        } = &err
        else {
            panic!("{field}: expected Loosen, got {err:?}");
        };
        assert_eq!((policy_name.as_str(), f.as_str()), ("standard", field));
        assert_eq!((policy.as_str(), requested.as_str()), case.shown, "{field}");
        let msg = err.to_string();
        assert!(
            msg.contains(field) && msg.contains(case.shown.0) && msg.contains(case.shown.1),
            "{msg}"
        );
    }
}

#[test]
fn no_overrides_leave_the_policy_unchanged() {
    let strict = SandboxPolicy::builtin("strict").unwrap();
    assert_eq!(
        strict.tightened(&LimitOverrides::default()).unwrap(),
        strict
    );
}

#[test]
fn a_tighter_override_must_still_run_python() {
    let strict = SandboxPolicy::builtin("strict").unwrap();
    for (overrides, want_field) in [
        (
            LimitOverrides {
                memory: Some(ByteSize::mib(1)),
                ..Default::default()
            },
            "limits.memory",
        ),
        (
            LimitOverrides {
                wall_time: Some(Duration::ZERO),
                ..Default::default()
            },
            "limits.wall_time",
        ),
        (
            LimitOverrides {
                pids: Some(0),
                ..Default::default()
            },
            "limits.pids",
        ),
        (
            LimitOverrides {
                open_files: Some(3),
                ..Default::default()
            },
            "limits.open_files",
        ),
        (
            LimitOverrides {
                cpus: Some(0.0),
                ..Default::default()
            },
            "limits.cpus",
        ),
        (
            LimitOverrides {
                cpus: Some(f64::NAN),
                ..Default::default()
            },
            "limits.cpus",
        ),
        (
            LimitOverrides {
                cpus: Some(-1.0),
                ..Default::default()
            },
            "limits.cpus",
        ),
    ] {
        let err = strict.tightened(&overrides).unwrap_err();
        assert!(
            matches!(&err, PolicyError::InvalidOverride { field, .. } if field == want_field),
            "{want_field}: {err:?}"
        );
    }
}

// ---- environment ----------------------------------------------------------

#[test]
fn env_names_must_be_allowed_by_the_policy() {
    let strict = SandboxPolicy::builtin("strict").unwrap();
    let standard = SandboxPolicy::builtin("standard").unwrap();
    let tz = env_map(&[("TZ", "UTC"), ("PYTHONHASHSEED", "0")]);

    assert!(standard.check_env(&tz).is_ok());
    assert!(strict.check_env(&BTreeMap::new()).is_ok());

    let err = strict.check_env(&tz).unwrap_err();
    assert!(
        matches!(&err, PolicyError::EnvNotAllowed { name, allowed } if name == "PYTHONHASHSEED" && allowed.is_empty())
    );
    assert!(err.to_string().contains("allowed: none"), "{err}");

    for name in ["LD_PRELOAD", "PYTHONPATH", "PATH", "A=B", ""] {
        let err = standard.check_env(&env_map(&[(name, "x")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, PolicyError::EnvNotAllowed { name: n, .. } if n == name),
            "{err:?}"
        );
        assert!(msg.contains("PYTHONHASHSEED, TZ, LANG, LC_ALL"), "{msg}");
    }

    let err = standard
        .check_env(&env_map(&[("TZ", "U\0TC")]))
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::EnvValueHasNul { name } if name == "TZ"),
        "{err:?}"
    );
}

#[test]
fn environment_is_the_set_then_allowed_requests_sorted() {
    let standard = SandboxPolicy::builtin("standard").unwrap();
    let requested = env_map(&[
        ("LANG", "en_US.UTF-8"),
        ("TZ", "UTC"),
        ("LD_PRELOAD", "/tmp/x.so"),
    ]);
    let env = standard.environment(&requested);
    let expected: Vec<(String, String)> = env_map(&[
        ("HOME", "/tmp"),
        ("LANG", "en_US.UTF-8"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("TZ", "UTC"),
    ])
    .into_iter()
    .collect();
    assert_eq!(env, expected);

    let strict = SandboxPolicy::builtin("strict").unwrap();
    let env = strict.environment(&requested);
    assert_eq!(env, strict_env_set().into_iter().collect::<Vec<_>>());
}

// ---- loading --------------------------------------------------------------

#[test]
fn load_reads_a_file_path_and_names_the_policy_after_its_stem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant-a.toml");
    std::fs::write(
        &path,
        "description = \"tenant A\"\n[limits]\nmemory = \"128MiB\"\n",
    )
    .unwrap();
    let p = SandboxPolicy::load(path.to_str().unwrap()).unwrap();
    assert_eq!(p.name, "tenant-a");
    assert_eq!(p.description, "tenant A");
    assert_eq!(p.limits.memory, ByteSize::mib(128));
    assert_eq!(p.limits.pids, Limits::strict().pids);
}

#[test]
fn errors_from_a_policy_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let shown = path.display().to_string();

    std::fs::write(&path, "[limits]\nmemory = \"4MiB\"\n").unwrap();
    let err = SandboxPolicy::load(&shown).unwrap_err();
    assert!(
        matches!(&err, PolicyError::InvalidField { source_name, field, .. } if *source_name == shown && field == "limits.memory"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&shown), "{err}");

    std::fs::write(&path, "[limits]\nmemroy = \"64MiB\"\n").unwrap();
    let msg = SandboxPolicy::load(&shown).unwrap_err().to_string();
    assert!(
        msg.starts_with(&shown) && msg.contains("memroy") && msg.contains("line 2"),
        "{msg}"
    );

    let missing = dir.path().join("missing.toml");
    let err = SandboxPolicy::load(missing.to_str().unwrap()).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Read { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn load_tells_names_from_paths() {
    assert_eq!(SandboxPolicy::load("strict").unwrap().name, "strict");
    assert_eq!(SandboxPolicy::load("standard").unwrap().name, "standard");

    let err = SandboxPolicy::load("relaxed").unwrap_err();
    assert!(
        matches!(&err, PolicyError::UnknownPolicy { name, known } if name == "relaxed" && known == BUILTIN_POLICIES)
    );
    assert!(err.to_string().contains("strict, standard"), "{err}");

    // A `.toml` suffix or a `/` means a file, even when a builtin has that stem.
    for path in ["strict.toml", "./strict", "no/such/dir/policy"] {
        let err = SandboxPolicy::load(path).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }), "{path}: {err:?}");
    }
}

// ---- back to TOML ---------------------------------------------------------

#[test]
fn to_toml_round_trips_the_shipped_policies() {
    for name in BUILTIN_POLICIES {
        let p = SandboxPolicy::builtin(name).unwrap();
        let text = p.to_toml();
        assert_eq!(
            SandboxPolicy::from_toml(name, &text, "shown").unwrap(),
            p,
            "{text}"
        );
    }
}

#[test]
fn to_toml_round_trips_unusual_values() {
    let text = r#"
        description = "quotes \" and unicode é, \\ backslash"
        network = "loopback"
        [limits]
        wall_time = "1500ms"
        cpu_time = "90s"
        memory = 33554433
        file_size = 0
        cpus = 0.25
        [env]
        set = { X = "tab\tand \"quote\"" , EMPTY = "" }
        allow = ["X", "_UNDERSCORE"]
        [seccomp]
        allowlist = "custom-1"
        denied = "kill"
        [user]
        uid = 1000
        gid = 1001
    "#;
    let p = parse(text).unwrap();
    assert_eq!(p.limits.memory, ByteSize(33_554_433));
    assert_eq!(p.limits.wall_time, Duration::from_millis(1500));
    let shown = p.to_toml();
    assert_eq!(parse(&shown).unwrap(), p, "{shown}");
    assert!(shown.contains("memory = \"33554433B\""), "{shown}");
    assert!(shown.contains("cpu_time = \"90s\""), "{shown}");
}

#[test]
fn a_tightened_policy_round_trips_too() {
    let overrides = LimitOverrides {
        memory: Some(ByteSize::mib(100)),
        wall_time: Some(Duration::from_millis(2500)),
        cpus: Some(0.5),
        ..Default::default()
    };
    let p = SandboxPolicy::builtin("strict")
        .unwrap()
        .tightened(&overrides)
        .unwrap();
    assert_eq!(
        SandboxPolicy::from_toml("strict", &p.to_toml(), "shown").unwrap(),
        p
    );
}

#[test]
fn json_display_uses_file_notation() {
    let p = SandboxPolicy::builtin("strict").unwrap();
    let json: serde_json::Value = serde_json::to_value(&p).unwrap();
    assert_eq!(json["name"], "strict");
    assert_eq!(json["network"], "none");
    assert_eq!(json["limits"]["memory"], "256MiB");
    assert_eq!(json["limits"]["wall_time"], "10s");
    assert_eq!(json["limits"]["pids"], 32);
    assert_eq!(json["seccomp"]["denied"], "errno");
    assert_eq!(json["env"]["set"]["HOME"], "/tmp");
}
