//! RabbitMQ accounts and the least privilege each role needs.
//!
//! These are the patterns every place that makes an account uses:
//! `deploy/rabbitmq/definitions.json` (compose), `scripts/ensure-services.sh` (the local
//! stack), the tests' own accounts, and `docs/BOTS.md`. Scripts and JSON cannot import
//! them, so `tests/tests/deploy_agreement/` checks those files against this module.
//!
//! Two layers. `configure`/`write`/`read` are regular expressions RabbitMQ matches
//! against exchange and queue names. Topic permissions, on the events exchange only, are
//! matched against routing keys: `write` against the key of each publish, `read` against
//! the key of each `queue.bind` (as written: a binding `room.*.message` must match the
//! pattern literally, so a pattern that admits no `*` or `#` admits no wildcard
//! binding). An account with no topic permission on an exchange may use any key there,
//! so every account gets one.

use crate::amqp::Names;
use crate::ids::room_in_key;

/// The operators' account: the management console, everything on the vhost.
pub const ADMIN: &str = "warren-admin";
/// The gateways' account; it is in `amqp.gateway_accounts` by default, so the
/// dispatcher believes the `actor` of its commands.
pub const GATEWAY: &str = "warren-gateway";
/// The dispatchers' account.
pub const DISPATCHER: &str = "warren-dispatcher";
/// The example bots' shared development account.
pub const BOT: &str = "warren-bot";
/// The admin CLI's account in development (`warren-admin`, docs/ADMIN.md): a bot whose
/// login the dispatchers list in `dispatcher.admin_bots`. Distinct from [`ADMIN`], the
/// operators' console account, which may do anything on the broker.
pub const ADMIN_CLI: &str = "warren-admin-cli";
/// The name the admin CLI's queues go under, `<p>.bot.admin.*`.
pub const ADMIN_CLI_QUEUES: &str = "admin";
/// The bots that share [`BOT`] in development: `warren-modbot` and `echo_bot.py`.
pub const DEV_BOTS: &[&str] = &["modbot", "echo"];

/// The event kinds a bot may be granted: what a bot acts on. `typing` and `kicked` say
/// who does what, moment by moment, and no bot needs them.
pub const BOT_EVENT_KINDS: &str = "message|member|moderation";

/// A bot account's default grant: those kinds in any room that is not a dm room. Room
/// ids are `[a-z0-9_-]`, a dm room's key part is `dm~a~b` (`~` is in no other room id),
/// and `*`/`#` are outside the class, so no wildcard binding matches.
pub const BOT_PUBLIC_ROOMS: &str = r"^room\.[a-z0-9_-]+\.(message|member|moderation)$";

/// What a gateway binds: `room.<room>.#` for the rooms its clients are in (dm rooms
/// included, `dm~a~b`), and its own `gw.<id>`. Neither `#` alone nor `user.*`.
pub const GATEWAY_TOPIC_READ: &str = r"^(room\.[A-Za-z0-9_~-]+\.(#|[a-z]+)|gw\.[A-Za-z0-9_-]+)$";

/// What a dispatcher publishes to the events exchange: room and user events, and answers
/// to a gateway's own key.
pub const DISPATCHER_TOPIC_WRITE: &str = r"^(room|user|gw)\..+$";

/// Matches no name but the empty one, which nobody uses: "nothing".
pub const NO_KEY: &str = "^$";

/// Matches every name: the operators' account only.
pub const EVERYTHING: &str = ".*";

/// `configure`, `write` and `read` regular expressions on a vhost, and the topic
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
        .map(|room| escape(&room_in_key(room)))
        .collect();
    format!(r"^room\.({})\.({BOT_EVENT_KINDS})$", rooms.join("|"))
}

fn topic(prefix: &str, write: &str, read: &str) -> Option<TopicPermissions> {
    Some(TopicPermissions {
        exchange: Names::new(prefix).events_exchange(),
        write: write.into(),
        read: read.into(),
    })
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
            topic: topic(prefix, NO_KEY, GATEWAY_TOPIC_READ),
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
            topic: topic(prefix, DISPATCHER_TOPIC_WRITE, NO_KEY),
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
        Permissions::bots_granted(prefix, &[name], grant)
    }

    /// An account several bots share (the development [`BOT`] account, for
    /// [`DEV_BOTS`]): each one's queues, and otherwise what one bot gets.
    pub fn bots_granted(prefix: &str, names: &[&str], grant: &str) -> Permissions {
        let p = escape(prefix);
        let names: Vec<String> = names.iter().map(|name| escape(name)).collect();
        let names = match names.as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join("|")),
        };
        let own = format!(r"{p}\.bot\.{names}\..+");
        Permissions {
            configure: format!("^{own}$"),
            write: format!(r"^({own}|{p}\.commands)$"),
            read: format!(r"^({own}|{p}\.events)$"),
            topic: topic(prefix, NO_KEY, grant),
        }
    }

    /// The admin CLI's: a bot's, for its queues `<p>.bot.admin.*`, granted no event key
    /// (it binds nothing; its answers come through `reply_to`).
    pub fn admin_cli(prefix: &str) -> Permissions {
        Permissions::bot_granted(prefix, ADMIN_CLI_QUEUES, NO_KEY)
    }

    /// The operators' account: everything, and no topic permission.
    pub fn admin() -> Permissions {
        Permissions {
            configure: EVERYTHING.into(),
            write: EVERYTHING.into(),
            read: EVERYTHING.into(),
            topic: None,
        }
    }

    /// Nothing at all.
    pub fn none() -> Permissions {
        Permissions {
            configure: NO_KEY.into(),
            write: NO_KEY.into(),
            read: NO_KEY.into(),
            topic: None,
        }
    }
}

/// A deployment's accounts: name, RabbitMQ tags, permissions. Each development password
/// is the account's name (`deploy/rabbitmq/definitions.json`, `scripts/ensure-services.sh`);
/// a real deployment brings its own definitions.
pub fn deployment(prefix: &str) -> [(&'static str, &'static [&'static str], Permissions); 5] {
    [
        (ADMIN, &["administrator"], Permissions::admin()),
        (GATEWAY, &[], Permissions::gateway(prefix)),
        (DISPATCHER, &[], Permissions::dispatcher(prefix)),
        (
            BOT,
            &[],
            Permissions::bots_granted(prefix, DEV_BOTS, BOT_PUBLIC_ROOMS),
        ),
        (ADMIN_CLI, &[], Permissions::admin_cli(prefix)),
    ]
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

    #[test]
    fn the_shared_bot_account_names_each_bot() {
        let b = Permissions::bots_granted("warren", DEV_BOTS, BOT_PUBLIC_ROOMS);
        assert_eq!(b.configure, r"^warren\.bot\.(modbot|echo)\..+$");
        assert_eq!(
            b.write,
            r"^(warren\.bot\.(modbot|echo)\..+|warren\.commands)$"
        );
    }
}
