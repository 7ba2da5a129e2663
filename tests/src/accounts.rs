//! RabbitMQ accounts a test makes for itself, with the least privilege each role needs,
//! scoped to the test's prefix. Each has a login unique to the test (`wt-<role>-<hex>`)
//! and a random password, and is deleted when dropped, also while a test panics.
//!
//! The permission patterns are the ones `scripts/ensure-services.sh` gives the local
//! stack's accounts and `docs/BOTS.md` documents, with the test's prefix: a test that
//! runs a gateway or a bot under them proves they are enough, and the refusals it
//! checks prove they are not more.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::broker::AMQP_URL;

const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// `configure`, `write` and `read` regular expressions on the `/` vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// `s` with the regular-expression characters that can occur in a prefix escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Permissions {
    /// A gateway's: declare the shared topology (idempotently, as every gateway does) and
    /// its own `<p>.gw.<id>` queue; publish to `<p>.commands`; bind its queue to
    /// `<p>.events`; consume its queue. Declaring a shard queue with its dead-letter
    /// exchange takes write on `<p>.dead` and read on the shard queue (RabbitMQ's rule
    /// for `x-dead-letter-exchange`), hence those.
    pub fn gateway(prefix: &str) -> Permissions {
        let p = escape(prefix);
        Permissions {
            configure: format!(r"^{p}\.(commands|commands\.[0-9]+|events|dead|gw\..+)$"),
            write: format!(r"^{p}\.(commands|commands\.[0-9]+|dead|gw\..+)$"),
            read: format!(r"^{p}\.(commands|commands\.[0-9]+|events|dead|gw\..+)$"),
        }
    }

    /// One bot's own account: its queues `<p>.bot.<name>.*` (declare, bind, consume),
    /// publishing to `<p>.commands`, binding from `<p>.events`, and nothing else.
    pub fn bot(prefix: &str, name: &str) -> Permissions {
        let p = escape(prefix);
        let own = format!(r"{p}\.bot\.{}\..+", escape(name));
        Permissions {
            configure: format!("^{own}$"),
            write: format!(r"^({own}|{p}\.commands)$"),
            read: format!(r"^({own}|{p}\.events)$"),
        }
    }
}

/// A RabbitMQ user that lives as long as the value.
pub struct Account {
    pub login: String,
    password: String,
}

impl Account {
    /// A login no other test uses: `wt-<role>-<hex>`. (Chosen before the account is
    /// created when a service must be configured with it first.)
    pub fn fresh_login(role: &str) -> String {
        format!("wt-{role}-{:08x}", rand::random::<u32>())
    }

    /// Creates `login` with a random password and `permissions` on `/`.
    pub async fn create(login: String, permissions: &Permissions) -> Account {
        let account = Account {
            login,
            password: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
        };
        ctl(&["add_user", &account.login, &account.password])
            .await
            .unwrap_or_else(|e| panic!("create RabbitMQ user {}: {e:#}", account.login));
        // From here on, dropping `account` deletes the user.
        ctl(&[
            "set_permissions",
            "-p",
            "/",
            &account.login,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ])
        .await
        .unwrap_or_else(|e| panic!("set permissions of {}: {e:#}", account.login));
        account
    }

    /// `amqp://<login>:<password>@127.0.0.1:5672/%2f`.
    pub fn url(&self) -> String {
        let rest = AMQP_URL
            .split_once('@')
            .map(|(_, host)| host)
            .expect("the test broker URL has credentials");
        format!("amqp://{}:{}@{rest}", self.login, self.password)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if let Err(e) = ctl_blocking(&["delete_user", &self.login]) {
            eprintln!("cleanup: RabbitMQ user {} left behind: {e:#}", self.login);
        }
    }
}

async fn ctl(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("rabbitmqctl");
    cmd.arg("-q").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("rabbitmqctl {} took more than {CTL_TIMEOUT:?}", args[0]))?
        .context("run rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// [`ctl`] without a runtime, for `Drop`; bounded by [`CTL_TIMEOUT`].
fn ctl_blocking(args: &[&str]) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run rabbitmqctl")?;
    let deadline = Instant::now() + CTL_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                use std::io::Read;
                let _ = stderr.read_to_string(&mut err);
            }
            bail!("rabbitmqctl {} failed: {}", args[0], err.trim());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("rabbitmqctl {} took more than {CTL_TIMEOUT:?}", args[0]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_anchored_and_escaped() {
        let g = Permissions::gateway("wt-1.x");
        assert_eq!(
            g.write,
            r"^wt-1\.x\.(commands|commands\.[0-9]+|dead|gw\..+)$"
        );
        let b = Permissions::bot("warren", "modbot");
        assert_eq!(b.configure, r"^warren\.bot\.modbot\..+$");
        assert_eq!(b.write, r"^(warren\.bot\.modbot\..+|warren\.commands)$");
        assert_eq!(b.read, r"^(warren\.bot\.modbot\..+|warren\.events)$");
    }
}
