//! The contract's permission patterns, and the local stack's accounts.

use std::collections::BTreeMap;

use proto::accounts::{self, escape, Permissions};
use proto::amqp::Names;

use crate::{read, rx, Problems};

/// What each role must be allowed and refused, in the words RabbitMQ matches: exchange
/// and queue names (publishing through the default exchange is a write on
/// `amq.default`), and on the events exchange (`topic_*`) routing keys, a binding's as
/// written. Names are separated by spaces.
#[rustfmt::skip]
pub(crate) const PROBES: &[(&str, &str, &str, &str)] = &[
    ("warren-gateway", "configure", "warren.gw.gateway1",
     "warren.commands warren.commands.0 warren.events warren.dead warren.bot.modbot.events amq.default xwarren.gw.gateway1"),
    ("warren-gateway", "write", "warren.commands warren.gw.gateway1",
     "warren.commands.0 warren.dead warren.events amq.default warren.bot.modbot.events"),
    ("warren-gateway", "read", "warren.events warren.gw.gateway1",
     "warren.commands warren.commands.0 warren.dead warren.bot.modbot.events amq.default"),
    ("warren-gateway", "topic_write", "", "room.general.message user.alice.message gw.gateway1"),
    ("warren-gateway", "topic_read", "room.general.# room.dm~alice~bob.# gw.gateway1",
     "# room.# room.*.# *.*.* user.# user.alice.message gw.*"),
    ("warren-dispatcher", "configure", "warren.commands warren.commands.0 warren.events warren.dead",
     "warren.gw.gateway1 warren.bot.modbot.events"),
    ("warren-dispatcher", "write", "amq.default warren.commands warren.commands.0 warren.events warren.dead",
     "warren.gw.gateway1 warren.bot.modbot.events"),
    ("warren-dispatcher", "read", "warren.commands warren.commands.0 warren.dead",
     "warren.events warren.gw.gateway1 warren.bot.modbot.events"),
    ("warren-dispatcher", "topic_write",
     "room.general.message room.dm~alice~bob.message user.alice.message gw.gateway1", "shard.0 #"),
    ("warren-dispatcher", "topic_read", "", "# room.general.#"),
    ("warren-bot", "configure", "warren.bot.modbot.events warren.bot.echo.replies",
     "warren.bot.other.events warren.commands warren.events warren.commands.0 warren.gw.gateway1"),
    ("warren-bot", "write", "warren.commands warren.bot.modbot.events",
     "warren.events amq.default warren.commands.0 warren.bot.other.events"),
    ("warren-bot", "read", "warren.events warren.bot.modbot.events",
     "warren.commands.0 warren.dead warren.gw.gateway1 warren.bot.other.events"),
    ("warren-bot", "topic_write", "", "room.general.message"),
    ("warren-bot", "topic_read", "room.general.message room.general.member room.general.moderation",
     "# room.# room.*.message room.general.# room.general.typing room.general.kicked \
      room.dm~alice~bob.message user.# user.alice.message gw.gateway1 gw.* *.*.*"),
];

/// The contract's patterns give each role what it needs and nothing more.
#[test]
#[rustfmt::skip]
pub(crate) fn the_contract_permissions_are_least_privilege() {
    let mut p = Problems::default();
    let perms: BTreeMap<&str, Permissions> = accounts::deployment("warren")
        .into_iter()
        .map(|(name, _, perms)| (name, perms))
        .collect();
    for (user, kind, allowed, refused) in PROBES {
        let perm = &perms[user];
        let topic = perm.topic.as_ref().expect("every role has topic permissions");
        let pattern = match *kind {
            "configure" => &perm.configure,
            "write" => &perm.write,
            "read" => &perm.read,
            "topic_write" => &topic.write,
            _ => &topic.read,
        };
        let re = rx(pattern);
        for name in allowed.split_whitespace() {
            p.check(re.is_match(name), || format!("{user} needs {kind} on {name}; {pattern} refuses it"));
        }
        for name in refused.split_whitespace() {
            p.check(!re.is_match(name), || format!("{user}'s {kind} pattern {pattern} also allows {name}"));
        }
    }
    p.finish();
}

/// `scripts/ensure-services.sh` gives the local stack's accounts the contract's names,
/// development passwords and patterns.
#[test]
pub(crate) fn the_local_stack_accounts_are_the_contract() {
    let mut p = Problems::default();
    let script = read("scripts/ensure-services.sh");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let line = rx(r#"(?m)^readonly (\w+)=(?:'([^']*)'|"([^"]*)"|([^\s'"]*))"#);
    let reference = rx(r"\$\{(\w+)\}");
    for m in line.captures_iter(&script) {
        let value = if let Some(v) = m.get(3) {
            let expanded = reference.replace_all(v.as_str(), |r: &regex::Captures| {
                vars.get(&r[1]).cloned().unwrap_or_else(|| r[0].to_owned())
            });
            expanded.replace("\\$", "$")
        } else {
            m.get(2).or(m.get(4)).map_or("", |v| v.as_str()).to_owned()
        };
        vars.insert(m[1].to_owned(), value);
    }
    let prefix = vars.get("PREFIX").cloned().unwrap_or_default();
    let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
    p.check(get("PREFIX_RE") == escape(&prefix), || {
        format!(
            "ensure-services.sh: PREFIX_RE {:?} is not PREFIX escaped",
            get("PREFIX_RE")
        )
    });
    p.check(
        get("EVENTS_EXCHANGE") == Names::new(&prefix).events_exchange(),
        || "ensure-services.sh: EVENTS_EXCHANGE is not the prefix's events exchange".to_owned(),
    );
    for (var, account, perms) in [
        ("GW", accounts::GATEWAY, Permissions::gateway(&prefix)),
        (
            "BOT",
            accounts::BOT,
            Permissions::bots_granted(&prefix, accounts::DEV_BOTS, accounts::BOT_PUBLIC_ROOMS),
        ),
        ("CLI", accounts::ADMIN_CLI, Permissions::admin_cli(&prefix)),
    ] {
        let topic = perms.topic.clone().expect("topic permissions");
        for (suffix, want) in [
            ("USER", account),
            ("PASS", account),
            ("CONFIGURE", perms.configure.as_str()),
            ("WRITE", perms.write.as_str()),
            ("READ", perms.read.as_str()),
            ("TOPIC_WRITE", topic.write.as_str()),
            ("TOPIC_READ", topic.read.as_str()),
        ] {
            let got = get(&format!("{var}_{suffix}"));
            p.check(got == want, || {
                format!("ensure-services.sh: {var}_{suffix} is {got:?}, the contract says {want:?}")
            });
        }
    }
    p.finish();
}
