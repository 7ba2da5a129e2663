//! Where the built binaries are, from the launcher, failing the test when one is missing.

use std::path::{Path, PathBuf};

pub(crate) use warren_stack::process::target_dir;

/// `<target>/debug/<name>`, or beside the running test binary's `deps/` directory.
pub(crate) fn binary(target: &Path, name: &str) -> PathBuf {
    warren_stack::process::binary(target, "debug", name).unwrap_or_else(|e| panic!("{e:#}"))
}
