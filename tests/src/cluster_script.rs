//! A local cluster run by one of `scripts/*-cluster.sh` for one test: on ports from a
//! base the test chooses, in a directory of its own, and stopped with its data removed
//! when the [`ClusterScript`] is dropped, also while a test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::succeeded;

pub(crate) struct ClusterScript {
    /// The script's file name under `scripts/`.
    name: &'static str,
    base: u16,
    dir: PathBuf,
}

impl ClusterScript {
    /// Stops whatever an interrupted earlier run left on `base`, then starts the
    /// cluster (the script bounds its own waits); the script's standard output.
    pub(crate) fn start(name: &'static str, base: u16) -> (ClusterScript, String) {
        let stem = name.trim_end_matches(".sh");
        let dir = std::env::temp_dir().join(format!("warren-test-{stem}-{base}"));
        let cluster = ClusterScript { name, base, dir };
        succeeded(&format!("{name} stop"), cluster.run(&["stop"]));
        let started = succeeded(&format!("{name} start"), cluster.run(&["start"]));
        let stdout = String::from_utf8_lossy(&started.stdout).into_owned();
        (cluster, stdout)
    }

    /// The first port the cluster's nodes listen on.
    pub(crate) fn base(&self) -> u16 {
        self.base
    }

    /// Runs the script with `args` on this cluster, waiting in the test's runtime, and
    /// asserts that it succeeded.
    pub(crate) async fn run_async(&self, args: &[&str]) {
        let out = tokio::process::Command::from(self.command(args))
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", self.name));
        succeeded(&format!("{} {args:?}", self.name), out);
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", self.name))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../scripts")
                    .join(self.name),
            )
            .arg("--dir")
            .arg(&self.dir)
            .args(["--port", &self.base.to_string()])
            .args(args);
        command
    }
}

impl Drop for ClusterScript {
    fn drop(&mut self) {
        let stopped = self.run(&["stop"]);
        if !stopped.status.success() {
            eprintln!(
                "{} stop --dir {}: {}",
                self.name,
                self.dir.display(),
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
    }
}
