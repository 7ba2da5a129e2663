//! Where the built binaries are, from the launcher, failing the test when one is missing.

use std::path::{Path, PathBuf};
use std::process::Output;

pub(crate) use warren_stack::process::target_dir;

/// `<target>/debug/<name>`, or beside the running test binary's `deps/` directory.
pub(crate) fn binary(target: &Path, name: &str) -> PathBuf {
    warren_stack::process::binary(target, "debug", name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A script's output, which must say it succeeded: otherwise the test fails with `what`
/// and the script's stderr.
pub(crate) fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
