//! From a checked client frame to a command on the broker: joins register in the room
//! index before they go out, leaves release the room's binding, and every publish runs
//! in the connection's own set of in-flight futures, so a slow broker never blocks the
//! socket and a refused publish becomes an `unavailable` error with the frame's `ref`.

use proto::amqp::{Actor, Command, CommandBody, ConnRef};
use proto::codes::ErrorCode;

use super::filter::SeqFilter;
use super::{Connection, RoomState};

impl Connection {
    /// Whether this connection is in `room` (joined or joining).
    pub(super) fn in_room(&self, room: &str) -> bool {
        self.outlet.lock().rooms.contains_key(room)
    }
}
use crate::broker::BindKey;

/// How an in-flight command ended.
pub(super) enum Done {
    Accepted,
    Refused {
        reference: Option<String>,
        correlation: String,
        join_room: Option<String>,
    },
}

impl Connection {
    pub(super) fn join(&mut self, reference: Option<String>, join: proto::client::Join) {
        let room = join.room.clone();
        {
            let mut out = self.outlet.lock();
            let filter = match out.rooms.get(&room) {
                Some(RoomState::Joined { filter }) | Some(RoomState::Joining { filter, .. }) => {
                    filter.clone()
                }
                None => SeqFilter::default(),
            };
            out.rooms.insert(
                room.clone(),
                RoomState::Joining {
                    held: Vec::new(),
                    filter,
                },
            );
        }
        // Registered before the join goes out: events from now on are held, none lost.
        self.gw
            .index
            .join(&room, &self.session, self.handle.clone());
        self.forward(reference, CommandBody::Join(join), Some(room));
    }

    pub(super) fn leave(&mut self, reference: Option<String>, room: String) {
        let was_member = self.outlet.lock().rooms.remove(&room).is_some();
        if was_member {
            self.gw.index.leave(&room, &self.session);
        }
        let broker = self.gw.broker.clone();
        let release = room.clone();
        self.inflight.push(Box::pin(async move {
            if was_member {
                broker.release(BindKey::Room(release)).await;
            }
            Done::Accepted
        }));
        self.forward(
            reference,
            CommandBody::Leave(proto::client::RoomOnly { room }),
            None,
        );
    }

    /// The command for `body`, acting as the token's user: identity never comes from
    /// the frame.
    pub(super) fn command_for(&self, reference: Option<String>, body: CommandBody) -> Command {
        Command {
            v: proto::BODY_VERSION,
            body,
            actor: Actor {
                id: self.claims.sub.clone(),
                name: self.name.clone(),
                roles: self.claims.roles.clone(),
                bot: false,
            },
            reference,
            conn: Some(ConnRef {
                gateway: self.gw.id.clone(),
                session: self.session.to_string(),
            }),
        }
    }

    /// Publishes a command in the background; its answer comes back as a reply.
    pub(super) fn forward(
        &mut self,
        reference: Option<String>,
        body: CommandBody,
        join_room: Option<String>,
    ) {
        let command = self.command_for(reference.clone(), body);
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        if let Some(room) = &join_room {
            self.pending_joins.insert(correlation.clone(), room.clone());
        }
        let broker = self.gw.broker.clone();
        self.inflight.push(Box::pin(async move {
            let bound = match &join_room {
                Some(room) => broker.ensure(BindKey::Room(room.clone())).await,
                None => Ok(()),
            };
            let published = match bound {
                Ok(()) => broker.publish(&command, &correlation).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => Done::Accepted,
                Err(_) => Done::Refused {
                    reference,
                    correlation,
                    join_room,
                },
            }
        }));
    }

    pub(super) fn finished(&mut self, done: Done) {
        if let Done::Refused {
            reference,
            correlation,
            join_room,
        } = done
        {
            self.pending_joins.remove(&correlation);
            if let Some(room) = join_room {
                self.drop_room(&room);
            }
            self.refuse(
                reference,
                ErrorCode::Unavailable,
                "the broker is unavailable; retry",
            );
        }
    }

    /// Forgets a room locally (a refused join) and lets its binding follow.
    pub(super) fn drop_room(&mut self, room: &str) {
        let removed = self.outlet.lock().rooms.remove(room).is_some();
        if removed {
            self.gw.index.leave(room, &self.session);
            let broker = self.gw.broker.clone();
            let key = BindKey::Room(room.to_owned());
            self.inflight.push(Box::pin(async move {
                broker.release(key).await;
                Done::Accepted
            }));
        }
    }

    /// Leaves every room (locally and at the dispatcher) and forgets the connection.
    pub(super) async fn cleanup(self) {
        let gw = self.gw.clone();
        let rooms: Vec<String> = self
            .outlet
            .lock()
            .rooms
            .drain()
            .map(|(room, _)| room)
            .collect();
        for room in &rooms {
            gw.index.leave(room, &self.session);
        }
        let last = gw.index.remove_session(&self.session, &self.claims.sub);
        for room in &rooms {
            gw.broker.release(BindKey::Room(room.clone())).await;
        }
        if last {
            gw.liveness.release(&self.claims.sub).await;
        }
        // Tell the dispatchers, so presence does not keep a ghost; in the background,
        // tracked, so shutdown waits for it.
        let leaves: Vec<Command> = rooms
            .into_iter()
            .map(|room| {
                self.command_for(None, CommandBody::Leave(proto::client::RoomOnly { room }))
            })
            .collect();
        if !leaves.is_empty() {
            let broker = gw.broker.clone();
            gw.tracker.spawn(async move {
                for command in leaves {
                    let correlation = uuid::Uuid::new_v4().simple().to_string();
                    if broker.publish(&command, &correlation).await.is_err() {
                        tracing::debug!("leave after close not published; presence will expire");
                    }
                }
            });
        }
    }
}
