//! `presence`, and the presence rules `join`, `leave` and `moderate` share: members are
//! distinct users over all their sessions; rooms above `presence.max_event_members`
//! present users get no `member` events (a mass reconnect would otherwise cost N²
//! frames; clients ask instead); and an entry whose gateway stopped renewing its
//! liveness key is gone.
//!
//! Expiry is checked when presence is read, not by a sweeper: reading a room's entries
//! also reads the liveness keys of their gateways (one `MGET`), removes the dead ones'
//! entries, and announces `member left` for users who thereby have no session left.
//! An entry is dead when its gateway's key is gone, or holds another value than when
//! the entry was written (the gateway restarted under the same id: see
//! [`PresenceEntry::incarnation`]). The gateway a command comes from is alive even
//! without its key (it just spoke), and bots' entries belong to no gateway and stay
//! until the bot leaves.

use std::collections::{HashMap, HashSet};

use proto::amqp::EventBody;
use proto::client::RoomOnly;
use proto::server::{MemberChange, MemberEvent, Presence, ServerBody, UserRef};

use super::ctx::{room_kind, Ctx, Failure};
use super::{Outcome, Routed};
use crate::store::{PresenceEntry, StoreError};

pub(super) async fn presence(ctx: &Ctx<'_>, args: &RoomOnly) -> Result<Outcome, Failure> {
    let room = args.room.as_str();
    let kind = room_kind(room)?;
    ctx.check_reader(room, &kind).await?;
    let entries = ctx.store.presence(room).await?;
    let (entries, departures) = prune(ctx, room, entries).await?;
    let mut outcome = ctx.answer(ServerBody::Presence(Presence {
        room: room.to_owned(),
        members: members(&entries),
    }));
    outcome.events = departures;
    Ok(outcome)
}

/// Drops the entries of dead gateways (from the store too). Returns the live entries
/// and the `member left` events of users who had only dead sessions.
pub(super) async fn prune(
    ctx: &Ctx<'_>,
    room: &str,
    entries: Vec<(String, PresenceEntry)>,
) -> Result<(Vec<(String, PresenceEntry)>, Vec<Routed>), StoreError> {
    let gateways = gateways(&entries);
    if gateways.is_empty() {
        return Ok((entries, Vec::new()));
    }
    let alive = ctx.store.alive_gateways(&gateways).await?;
    let own = ctx.gateway();
    let (live, dead) = split_dead(entries.clone(), |e| is_live(e, &own, &alive));
    if dead.is_empty() {
        return Ok((live, Vec::new()));
    }
    tracing::info!(
        room,
        sessions = dead.len(),
        "dropping presence of gateways that stopped renewing"
    );
    ctx.store.exit_all(room, &dead).await?;
    let mut events = Vec::new();
    if members(&entries).len() <= ctx.rules.max_event_members {
        for user in departed(&entries, &live) {
            events.push(Routed::room(EventBody::Member(MemberEvent {
                room: room.to_owned(),
                event: MemberChange::Left,
                user,
            })));
        }
    }
    Ok((live, events))
}

/// The distinct gateways of `entries` (a bot's entry has none).
pub fn gateways(entries: &[(String, PresenceEntry)]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for (_, e) in entries {
        let g = e.gateway.as_str();
        if !g.is_empty() && !seen.contains(&g) {
            seen.push(g);
        }
    }
    seen
}

/// Whether an entry stands, given the liveness keys' values (`alive`, by gateway) and
/// the gateway the current command comes from (`own`).
pub fn is_live(entry: &PresenceEntry, own: &str, alive: &HashMap<String, String>) -> bool {
    if entry.gateway.is_empty() {
        return true;
    }
    match alive.get(&entry.gateway) {
        None => entry.gateway == own,
        Some(current) => entry.incarnation.as_ref().is_none_or(|i| i == current),
    }
}

/// Splits entries into the live ones and the sessions of the others.
pub fn split_dead(
    entries: Vec<(String, PresenceEntry)>,
    is_live: impl Fn(&PresenceEntry) -> bool,
) -> (Vec<(String, PresenceEntry)>, Vec<String>) {
    let (live, dead): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, e)| is_live(e));
    (live, dead.into_iter().map(|(s, _)| s).collect())
}

/// Users present in `before` with no entry in `after`.
pub fn departed(
    before: &[(String, PresenceEntry)],
    after: &[(String, PresenceEntry)],
) -> Vec<UserRef> {
    let staying: HashSet<&str> = after.iter().map(|(_, e)| e.id.as_str()).collect();
    members(before)
        .into_iter()
        .filter(|u| !staying.contains(u.id.as_str()))
        .collect()
}

/// Distinct users, sorted by id; a user's name is the one of their first session.
pub fn members(entries: &[(String, PresenceEntry)]) -> Vec<UserRef> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut users: Vec<UserRef> = Vec::new();
    for (_, entry) in entries {
        if seen.insert(entry.id.as_str()) {
            users.push(UserRef {
                id: entry.id.clone(),
                name: entry.name.clone(),
            });
        }
    }
    users.sort_by(|a, b| a.id.cmp(&b.id));
    users
}

/// True when `user` is present through a session other than `session`.
pub fn has_other_session(entries: &[(String, PresenceEntry)], user: &str, session: &str) -> bool {
    entries.iter().any(|(s, e)| e.id == user && s != session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session: &str, id: &str, name: &str) -> (String, PresenceEntry) {
        on("g", session, id, name)
    }

    fn on(gateway: &str, session: &str, id: &str, name: &str) -> (String, PresenceEntry) {
        (
            session.into(),
            PresenceEntry {
                id: id.into(),
                name: name.into(),
                gateway: gateway.into(),
                incarnation: None,
            },
        )
    }

    fn alive(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(g, v)| ((*g).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ids(users: &[UserRef]) -> Vec<&str> {
        users.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn members_are_distinct_users_sorted() {
        let entries = vec![
            entry("s1", "bob", "Bob"),
            entry("s2", "alice", "Alice"),
            entry("s3", "bob", "Bobby"),
        ];
        assert_eq!(
            members(&entries),
            vec![
                UserRef {
                    id: "alice".into(),
                    name: "Alice".into()
                },
                UserRef {
                    id: "bob".into(),
                    name: "Bob".into()
                },
            ]
        );
        assert!(members(&[]).is_empty());
    }

    #[test]
    fn other_sessions_are_told_apart_from_this_one() {
        let entries = vec![entry("s1", "bob", "Bob"), entry("s2", "alice", "Alice")];
        assert!(!has_other_session(&entries, "bob", "s1"));
        assert!(has_other_session(&entries, "bob", "s9"));
        assert!(!has_other_session(&entries, "carol", "s1"));
    }

    /// Sessions on two gateways (bob on both) and a bot's, which has none.
    fn two_gateways_and_a_bot() -> Vec<(String, PresenceEntry)> {
        vec![
            on("g1", "s1", "alice", "A"),
            on("g2", "s2", "bob", "B"),
            on("g1", "s3", "bob", "B"),
            on("g2", "s4", "carol", "C"),
            on("", "amqp:bot", "bot", "bot"),
        ]
    }

    #[test]
    fn gateways_are_listed_once_and_bots_have_none() {
        assert_eq!(gateways(&two_gateways_and_a_bot()), vec!["g1", "g2"]);
    }

    #[test]
    fn an_entry_lives_while_its_gateway_keeps_the_same_key() {
        let (_, mut e) = on("g1", "s1", "a", "A");
        let keys = alive(&[("g1", "boot-2")]);
        // Written before incarnations were recorded, or by a gateway writing "1": alive.
        assert!(is_live(&e, "g9", &keys));
        e.incarnation = Some("boot-2".into());
        assert!(is_live(&e, "g9", &keys));
        // The gateway restarted under the same id: a ghost of its former life.
        e.incarnation = Some("boot-1".into());
        assert!(!is_live(&e, "g9", &keys));
        assert!(!is_live(&e, "g1", &keys));
        // No key: dead, unless its gateway is the one speaking now.
        e.incarnation = None;
        assert!(!is_live(&e, "g9", &alive(&[])));
        assert!(is_live(&e, "g1", &alive(&[])));
        // A bot's entry has no gateway and always stands.
        let (_, bot) = on("", "amqp:bot", "bot", "bot");
        assert!(is_live(&bot, "g9", &alive(&[])));
    }

    #[test]
    fn a_dead_gateway_takes_its_sessions_and_only_users_left_with_none_depart() {
        let entries = two_gateways_and_a_bot();
        let (live, dead) = split_dead(entries.clone(), |e| e.gateway != "g2");
        assert_eq!(dead, vec!["s2", "s4"]);
        assert_eq!(ids(&members(&live)), vec!["alice", "bob", "bot"]);
        // bob keeps a session on g1: only carol departs.
        assert_eq!(ids(&departed(&entries, &live)), vec!["carol"]);
    }
}
