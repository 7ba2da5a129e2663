//! One service process: started from a built binary with its settings in the
//! environment, its stdout and stderr appended to a log file, killed on drop.
//!
//! Its listeners are bound here, before it starts, and handed to it already bound
//! (`WARREN_LISTEN_FD`, `WARREN_OPS_LISTEN_FD`; `common::listen` takes them over): the
//! launcher knows every port before the process runs, and no other process can take a
//! port between the moment it is chosen and the moment it is used.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The variable naming the inherited public listener (a gateway's, or a dispatcher's
/// HTTP), as `common::listen` reads it.
pub const LISTEN_FD: &str = "WARREN_LISTEN_FD";
/// The variable naming a gateway's inherited operations listener.
pub const OPS_LISTEN_FD: &str = "WARREN_OPS_LISTEN_FD";
/// Where the inherited listeners sit in the child: right after stdin, stdout, stderr.
const FIRST_INHERITED_FD: RawFd = 3;

/// A listener to bind before a start and hand to the process.
#[derive(Debug)]
pub struct Listen {
    /// The variable that tells the process which descriptor it is.
    pub var: &'static str,
    /// The setting that names the address (`WARREN__GATEWAY__LISTEN`): given the
    /// address bound, so that what the process checks about it (loopback or not) is
    /// true of the socket it serves on.
    pub setting: &'static str,
    /// What to bind; port 0 the first time, the port it got on every restart.
    pub addr: SocketAddr,
    /// Already bound by the caller (at `addr`): used by the next start instead.
    pub bound: Option<TcpListener>,
}

impl Listen {
    pub fn new(var: &'static str, setting: &'static str, addr: SocketAddr) -> Listen {
        Listen {
            var,
            setting,
            addr,
            bound: None,
        }
    }
}

pub struct Service {
    /// `d0`, `gw1`, ...
    pub name: String,
    pub log: PathBuf,
    /// `None` before the first start and after a kill.
    pub child: Option<Child>,
    /// Bound before each start and handed over: the public listener first, then the
    /// operations listener (gateways). A start records the addresses it got here, so a
    /// restart binds the same ports again.
    pub listen: Vec<Listen>,
    /// Gateways only: their id.
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
            listen: Vec::new(),
            id: None,
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The address listener `i` got at the last start.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.listen.get(i).map(|l| l.addr)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process runs (false after a kill or a crash).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Binds its listeners, then starts `bin` with exactly `env` as its `WARREN*`
    /// settings (the listeners' own last) and the listeners handed over.
    pub fn start(&mut self, bin: &Path, mut env: Vec<(String, String)>) -> anyhow::Result<()> {
        let listeners = self
            .listen
            .iter_mut()
            .map(|l| match l.bound.take() {
                Some(listener) => Ok(listener),
                None => TcpListener::bind(l.addr)
                    .with_context(|| format!("{}: bind {}", self.name, l.addr)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (l, bound) in self.listen.iter_mut().zip(&listeners) {
            l.addr = bound.local_addr().context("bound address")?;
            env.retain(|(k, _)| k != l.setting);
            env.push((l.setting.to_owned(), l.addr.to_string()));
        }
        self.env = env.clone();
        let mut file = open_log(&self.log)?;
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
            "==== warren-stack: starting {}: {} {} (listening on {:?})",
            self.name,
            bin.display(),
            shown.join(" "),
            self.listen.iter().map(|l| l.addr).collect::<Vec<_>>()
        );
        let mut cmd = Command::new(bin);
        // The developer's own WARREN* settings must not leak into a stack.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARREN") {
                cmd.env_remove(&key);
            }
        }
        let mut handed = [(-1, -1); 2];
        assert!(listeners.len() <= handed.len(), "at most two listeners");
        for (i, (l, listener)) in self.listen.iter().zip(&listeners).enumerate() {
            let target = FIRST_INHERITED_FD + i as RawFd;
            handed[i] = (listener.as_raw_fd(), target);
            cmd.env(l.var, target.to_string());
        }
        // SAFETY: the closure runs in the child between fork and exec, and calls only
        // fcntl and dup2, which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || hand_over(&handed));
        }
        cmd.args(&self.args)
            .envs(env.into_iter().collect::<HashMap<_, _>>())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                file.try_clone().context("clone log file handle")?,
            ))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} ({})", bin.display(), self.name))?;
        self.child = Some(child);
        // The child holds its own copies now; ours close here.
        drop(listeners);
        Ok(())
    }

    /// SIGTERM; does not wait.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("the service does not run")?;
        let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
        // SAFETY: kill(2) with a pid of our own child, which we have not reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill -TERM");
        }
        Ok(())
    }

    /// Waits (bounded) for the process to exit on its own; `None` if it did not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?.ok();
        self.child = None;
        status
    }

    /// SIGKILL, then wait until the process is reaped.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
                anyhow::bail!("{} did not exit within {KILL_WAIT:?} of SIGKILL", self.name);
            }
        }
        Ok(())
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

/// In the child: puts each `(source, target)` descriptor at `target`, without the
/// close-on-exec flag. Every source is first copied above the targets, so that placing
/// one never overwrites another still to be placed. `-1` pairs are skipped.
fn hand_over(fds: &[(RawFd, RawFd); 2]) -> std::io::Result<()> {
    const ABOVE_TARGETS: RawFd = 10;
    let mut high = [-1; 2];
    for (i, (source, _)) in fds.iter().enumerate() {
        if *source >= 0 {
            // SAFETY: fcntl on a descriptor this process holds.
            high[i] = unsafe { libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, ABOVE_TARGETS) };
            if high[i] < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    for (i, (_, target)) in fds.iter().enumerate() {
        // SAFETY: dup2 onto a small descriptor number; the copy it makes is not
        // close-on-exec, so the program exec'd next inherits it.
        if high[i] >= 0 && unsafe { libc::dup2(high[i], *target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))
}

/// The workspace this crate sits in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("stack/ sits in the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR` (relative to the workspace root when relative), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `<target>/<profile>/<name>`, or beside the running executable (a test binary's
/// `deps/` parent, or `warren-stack` itself).
pub fn binary(target: &Path, profile: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = target.join(profile).join(name);
    if path.is_file() {
        return Ok(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let beside = dir.join(name);
            if beside.is_file() {
                return Ok(beside);
            }
        }
    }
    anyhow::bail!(
        "{} is missing: run `cargo build --bins{}` first (or warren-stack --build)",
        path.display(),
        if profile == "release" {
            " --release"
        } else {
            ""
        }
    )
}
