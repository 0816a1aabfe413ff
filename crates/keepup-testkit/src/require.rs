//! Skip policy: a test that needs root or a system program says why it
//! skips; under `CI=true` nothing may skip, so the same check fails instead.

use std::path::Path;

/// True when running under CI (`CI=true`), where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns `true` when the test can run. When it cannot, prints why and
/// returns `false` (the caller returns early), or panics under CI.
pub fn available(test: &str, what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs {what}, and under CI=true nothing may skip (.ci/run installs it)");
    }
    eprintln!("SKIPPED {test}: needs {what}");
    false
}

/// Is the process root (needed for namespaces, netlink, mariadbd as a test user)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Finds `program` on PATH or in the sbin directories.
pub fn program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found
}

/// `available` for root.
pub fn root(test: &str) -> bool {
    available(test, "root", is_root())
}

/// `available` for a program on PATH.
pub fn has_program(test: &str, name: &str) -> bool {
    available(
        test,
        &format!("the program {name}"),
        program(name).is_some(),
    )
}
