//! One service process: started from a built binary with its settings in the
//! environment, its stdout and stderr appended to a log file, killed on drop.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Service {
    /// `d0`, `gw1`, ...
    pub name: String,
    pub log: PathBuf,
    /// `None` before the first start and after a kill.
    pub child: Option<Child>,
    /// Gateways only: where they listen and their id.
    pub addr: Option<SocketAddr>,
    /// Gateways only: the operations listener (`/readyz`, `/metrics`, `/stats`).
    pub ops: Option<SocketAddr>,
    pub id: Option<String>,
    /// The settings of the last start, reused by a restart.
    pub env: Vec<(String, String)>,
    /// Command-line arguments of every start (e.g. `--config FILE`).
    pub args: Vec<String>,
}

impl Service {
    pub fn new(name: String, log: PathBuf) -> Service {
        Service {
            name,
            log,
            child: None,
            addr: None,
            ops: None,
            id: None,
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Whether the process runs (false after a kill or a crash).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts `bin` with exactly `env` as its `WARREN*` settings.
    pub fn start(&mut self, bin: &Path, env: Vec<(String, String)>) {
        self.env = env.clone();
        let mut file = open_log(&self.log);
        let shown: Vec<String> = env
            .iter()
            .map(|(k, v)| {
                if k.contains("SECRET") {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let _ = writeln!(
            file,
            "==== warren-tests: starting {}: {} {}",
            self.name,
            bin.display(),
            shown.join(" ")
        );
        let mut cmd = Command::new(bin);
        // The developer's own WARREN* settings must not leak into a test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARREN") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(&self.args)
            .envs(env.into_iter().collect::<HashMap<_, _>>())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                file.try_clone().expect("clone log file handle"),
            ))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", bin.display(), self.name));
        self.child = Some(child);
    }

    /// SIGKILL, then wait until the process is reaped.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
                panic!("{} did not exit within {KILL_WAIT:?} of SIGKILL", self.name);
            }
        }
    }

    /// As [`Service::kill`], without a runtime (for `Drop`); never panics.
    pub fn kill_blocking(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + KILL_WAIT;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read: {e})"),
        }
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("bound address")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR` (relative to the workspace root when relative), else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `<target>/debug/<name>`, or beside the running test binary's `deps/` directory.
pub(crate) fn binary(target: &Path, name: &str) -> PathBuf {
    let path = target.join("debug").join(name);
    if path.is_file() {
        return path;
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(name)))
    {
        if beside.is_file() {
            return beside;
        }
    }
    panic!(
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    )
}
