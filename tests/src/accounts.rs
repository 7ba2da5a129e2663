//! RabbitMQ accounts a test makes for itself, with the least privilege each role needs,
//! scoped to the test's prefix. Each has a login unique to the test (`wt-<role>-<hex>`)
//! and a random password, and is deleted when dropped, also while a test panics.
//!
//! The permission patterns are the ones `scripts/ensure-services.sh` gives the local
//! stack's accounts, `deploy/rabbitmq/definitions.json` gives compose's and `docs/BOTS.md`
//! documents, with the test's prefix: a test that runs a gateway, a dispatcher or a bot
//! under them proves they are enough, and the refusals it checks prove they are not more.
//!
//! Two layers. `configure`/`write`/`read` are matched against exchange and queue names.
//! Topic permissions, on the events exchange only, are matched against routing keys:
//! `write` against the key of each publish, `read` against the key of each `queue.bind`
//! (as written: a binding `room.*.message` must match the pattern literally, so a pattern
//! that admits no `*` or `#` admits no wildcard binding). An account with no topic
//! permission on an exchange may use any key there, so every account gets one.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::broker::AMQP_URL;

const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The event kinds a bot may be granted: what a bot acts on. `typing` and `kicked` say
/// who does what, moment by moment, and no bot needs them.
pub const BOT_EVENT_KINDS: &str = "message|member|moderation";

/// The local `warren-bot` account's default grant: those kinds in any room that is not a
/// dm room. Room ids are `[a-z0-9_-]`, a dm room's key part is `dm~a~b` (`~` is in no
/// other room id), and `*`/`#` are outside the class, so no wildcard binding matches.
pub const BOT_PUBLIC_ROOMS: &str = r"^room\.[a-z0-9_-]+\.(message|member|moderation)$";

/// What a gateway binds: `room.<room>.#` for the rooms its clients are in (dm rooms
/// included, `dm~a~b`), and its own `gw.<id>`. Neither `#` alone nor `user.*`.
pub const GATEWAY_TOPIC_READ: &str = r"^(room\.[A-Za-z0-9_~-]+\.(#|[a-z]+)|gw\.[A-Za-z0-9_-]+)$";

/// What a dispatcher publishes to the events exchange: room and user events, and answers
/// to a gateway's own key.
pub const DISPATCHER_TOPIC_WRITE: &str = r"^(room|user|gw)\..+$";

/// Matches no key but the empty one, which nobody uses: "nothing".
pub const NO_KEY: &str = "^$";

/// `configure`, `write` and `read` regular expressions on the `/` vhost, and the topic
/// permissions on one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
    pub topic: Option<TopicPermissions>,
}

/// Topic permissions on `exchange`: `write` is matched against the routing key of each
/// publish, `read` against the binding key of each `queue.bind` and `queue.unbind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermissions {
    pub exchange: String,
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

/// A bot's topic `read` pattern for `rooms` only (room ids; `dm:a:b` becomes `dm~a~b`,
/// as in routing keys).
pub fn bot_rooms_grant(rooms: &[&str]) -> String {
    let rooms: Vec<String> = rooms
        .iter()
        .map(|room| escape(&proto::ids::room_in_key(room)))
        .collect();
    format!(r"^room\.({})\.({BOT_EVENT_KINDS})$", rooms.join("|"))
}

impl Permissions {
    /// A gateway's: declare, delete, bind and consume its own `<p>.gw.<id>` queue; publish
    /// to `<p>.commands`; bind from `<p>.events` the keys it needs. It declares nothing
    /// shared (it checks the topology with passive declares, which need no permission),
    /// so it can neither delete an exchange nor read a command queue.
    pub fn gateway(prefix: &str) -> Permissions {
        let p = escape(prefix);
        Permissions {
            configure: format!(r"^{p}\.gw\..+$"),
            write: format!(r"^{p}\.(commands|gw\..+)$"),
            read: format!(r"^{p}\.(events|gw\..+)$"),
            topic: Some(TopicPermissions {
                exchange: format!("{prefix}.events"),
                write: NO_KEY.into(),
                read: GATEWAY_TOPIC_READ.into(),
            }),
        }
    }

    /// A dispatcher's: declare the shared topology; consume the shard queues; publish
    /// events, answers (default exchange), dead letters and probes (`<p>.commands`).
    /// Declaring a shard queue with its dead-letter exchange takes read on the queue and
    /// write on `<p>.dead` (RabbitMQ's rule for `x-dead-letter-exchange`); binding takes
    /// write on the queue and read on the exchange.
    pub fn dispatcher(prefix: &str) -> Permissions {
        let p = escape(prefix);
        Permissions {
            configure: format!(r"^{p}\.(commands|commands\.[0-9]+|events|dead)$"),
            write: format!(r"^(amq\.default|{p}\.(commands|commands\.[0-9]+|events|dead))$"),
            read: format!(r"^{p}\.(commands|commands\.[0-9]+|dead)$"),
            topic: Some(TopicPermissions {
                exchange: format!("{prefix}.events"),
                write: DISPATCHER_TOPIC_WRITE.into(),
                read: NO_KEY.into(),
            }),
        }
    }

    /// One bot's own account with the default grant ([`BOT_PUBLIC_ROOMS`]).
    pub fn bot(prefix: &str, name: &str) -> Permissions {
        Permissions::bot_granted(prefix, name, BOT_PUBLIC_ROOMS)
    }

    /// One bot's own account: its queues `<p>.bot.<name>.*` (declare, bind, consume),
    /// publishing to `<p>.commands`, binding from `<p>.events` the keys `grant` matches
    /// (a topic `read` pattern), and nothing else.
    pub fn bot_granted(prefix: &str, name: &str, grant: &str) -> Permissions {
        let p = escape(prefix);
        let own = format!(r"{p}\.bot\.{}\..+", escape(name));
        Permissions {
            configure: format!("^{own}$"),
            write: format!(r"^({own}|{p}\.commands)$"),
            read: format!(r"^({own}|{p}\.events)$"),
            topic: Some(TopicPermissions {
                exchange: format!("{prefix}.events"),
                write: NO_KEY.into(),
                read: grant.into(),
            }),
        }
    }

    /// Nothing at all, until [`Account::grant`] gives more.
    pub fn none() -> Permissions {
        Permissions {
            configure: NO_KEY.into(),
            write: NO_KEY.into(),
            read: NO_KEY.into(),
            topic: None,
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
        // From here on, dropping `account` deletes the user (and its permissions).
        account.grant(permissions).await;
        account
    }

    /// Sets the account's permissions on `/`, and its topic permissions if any (for a
    /// service whose URL must be known before its stack's prefix is).
    pub async fn grant(&self, permissions: &Permissions) {
        ctl(&[
            "set_permissions",
            "-p",
            "/",
            &self.login,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ])
        .await
        .unwrap_or_else(|e| panic!("set permissions of {}: {e:#}", self.login));
        if let Some(topic) = &permissions.topic {
            ctl(&[
                "set_topic_permissions",
                "-p",
                "/",
                &self.login,
                &topic.exchange,
                &topic.write,
                &topic.read,
            ])
            .await
            .unwrap_or_else(|e| panic!("set topic permissions of {}: {e:#}", self.login));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_anchored_and_escaped() {
        let g = Permissions::gateway("wt-1.x");
        assert_eq!(g.write, r"^wt-1\.x\.(commands|gw\..+)$");
        assert_eq!(g.topic.unwrap().exchange, "wt-1.x.events");
        let b = Permissions::bot("warren", "modbot");
        assert_eq!(b.configure, r"^warren\.bot\.modbot\..+$");
        assert_eq!(b.write, r"^(warren\.bot\.modbot\..+|warren\.commands)$");
        assert_eq!(b.read, r"^(warren\.bot\.modbot\..+|warren\.events)$");
        let topic = b.topic.unwrap();
        assert_eq!(
            (
                topic.exchange.as_str(),
                topic.write.as_str(),
                topic.read.as_str()
            ),
            ("warren.events", NO_KEY, BOT_PUBLIC_ROOMS)
        );
        assert_eq!(
            bot_rooms_grant(&["general", "dm:alice:bob"]),
            r"^room\.(general|dm~alice~bob)\.(message|member|moderation)$"
        );
    }
}
