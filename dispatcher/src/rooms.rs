//! Rooms declared in configuration (`[[rooms.list]]`): checked once when the dispatcher
//! starts, so that a typo stops it instead of opening a room by mistake, then written to
//! the store each time it connects (idempotent: see `configure.lua`).

use common::settings::RoomConfig;
use proto::ids::{validate_room, validate_user, RoomKind};

pub use crate::store::ConfiguredRoom;
use crate::store::{RoomMeta, Visibility};

/// Checks every declared room. The error names the first problem.
pub fn plan(list: &[RoomConfig]) -> Result<Vec<ConfiguredRoom>, String> {
    let mut rooms: Vec<ConfiguredRoom> = Vec::with_capacity(list.len());
    for room in list {
        let id = room.id.as_str();
        match validate_room(id) {
            Ok(RoomKind::Public) => {}
            Ok(RoomKind::Dm(..)) => return Err(format!("rooms.list: {id:?} is a dm room")),
            Err(e) => return Err(format!("rooms.list: room {id:?}: {e}")),
        }
        if rooms.iter().any(|r| r.id == id) {
            return Err(format!("rooms.list: room {id:?} is declared twice"));
        }
        let visibility = match room.visibility.as_str() {
            "public" => Visibility::Public,
            "private" => Visibility::Private,
            other => {
                return Err(format!(
                    "rooms.list: room {id:?}: visibility {other:?} is neither public nor private"
                ))
            }
        };
        for user in room.owners.iter().chain(&room.moderators) {
            validate_user(user)
                .map_err(|e| format!("rooms.list: room {id:?}: user {user:?}: {e}"))?;
        }
        if room.history_limit == Some(0) {
            return Err(format!(
                "rooms.list: room {id:?}: history_limit must be at least 1"
            ));
        }
        rooms.push(ConfiguredRoom {
            id: id.to_owned(),
            meta: RoomMeta {
                visibility,
                announce: room.announce,
                history_limit: room.history_limit,
                history_on_join: room.history_on_join,
            },
            owners: room.owners.clone(),
            moderators: room.moderators.clone(),
        });
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomConfig {
        RoomConfig {
            id: id.into(),
            visibility: "public".into(),
            announce: false,
            owners: vec![],
            moderators: vec![],
            history_limit: None,
            history_on_join: None,
        }
    }

    #[test]
    fn declared_rooms_become_settings_and_roles() {
        let staff = RoomConfig {
            visibility: "private".into(),
            announce: true,
            owners: vec!["alice".into()],
            moderators: vec!["bob".into()],
            history_limit: Some(20),
            history_on_join: Some(0),
            ..room("staff")
        };
        let planned = plan(&[room("news"), staff]).unwrap();
        assert_eq!(planned[0].meta, RoomMeta::new(Visibility::Public, false));
        assert_eq!(
            planned[1],
            ConfiguredRoom {
                id: "staff".into(),
                meta: RoomMeta {
                    visibility: Visibility::Private,
                    announce: true,
                    history_limit: Some(20),
                    history_on_join: Some(0),
                },
                owners: vec!["alice".into()],
                moderators: vec!["bob".into()],
            }
        );
    }

    #[test]
    fn mistakes_stop_the_dispatcher() {
        let bad = [
            vec![room("Bad.Id")],
            vec![room("dm:a:b")],
            vec![room("x"), room("x")],
            vec![RoomConfig {
                visibility: "secret".into(),
                ..room("x")
            }],
            vec![RoomConfig {
                owners: vec!["a:b".into()],
                ..room("x")
            }],
            vec![RoomConfig {
                history_limit: Some(0),
                ..room("x")
            }],
        ];
        for list in bad {
            assert!(plan(&list).is_err(), "{list:?}");
        }
        assert_eq!(plan(&[]), Ok(vec![]));
    }
}
