//! RabbitMQ accounts a test makes for itself, with the least privilege each role needs,
//! scoped to the test's prefix. Each has a login unique to the test (`wt-<role>-<hex>`)
//! and a random password, and is deleted when dropped, also while a test panics.
//!
//! The permissions are the contract's ([`proto::accounts`]), the ones
//! `scripts/ensure-services.sh` gives the local stack's accounts and
//! `deploy/rabbitmq/definitions.json` gives compose's, with the test's prefix: a test
//! that runs a gateway, a dispatcher or a bot under them proves they are enough, and the
//! refusals it checks prove they are not more.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::broker::AMQP_URL;

pub use proto::accounts::{bot_rooms_grant, Permissions};

const CTL_TIMEOUT: Duration = Duration::from_secs(30);

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
        // From here on, dropping `account` deletes the user (and its permissions).
        account.grant(permissions).await;
        account
    }

    /// Sets the account's permissions on `/`, and its topic permissions if any (for a
    /// service whose URL must be known before its stack's prefix is).
    pub async fn grant(&self, permissions: &Permissions) {
        let login = self.login.as_str();
        let mut commands = vec![[
            "set_permissions",
            login,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ]];
        if let Some(topic) = &permissions.topic {
            commands.push([
                "set_topic_permissions",
                login,
                &topic.exchange,
                &topic.write,
                &topic.read,
            ]);
        }
        for [command, rest @ ..] in commands {
            // `rabbitmqctl <command> -p / <login> <patterns...>`
            let args: Vec<&str> = [command, "-p", "/"].into_iter().chain(rest).collect();
            ctl(&args)
                .await
                .unwrap_or_else(|e| panic!("{command} of {login}: {e:#}"));
        }
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
