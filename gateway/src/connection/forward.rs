//! From a checked client frame to a command on the broker: joins register in the room
//! index before they go out, leaves release the room's binding, and every publish runs
//! in the connection's own set of in-flight futures, so a slow broker never blocks the
//! socket and a refused publish becomes an `unavailable` error with the frame's `ref`.

use std::collections::HashMap;
use std::sync::Arc;

use common::auth::Claims;
use common::hop_span;
use common::trace::{self, TraceParent};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use proto::amqp::{Actor, Command, CommandBody, ConnRef};
use proto::codes::ErrorCode;
use proto::server::ServerFrame;
use tracing::Instrument;

use super::mailbox::ConnHandle;
use super::outlet::Outlet;
use crate::broker::BindKey;
use crate::state::Gateway;

/// How an in-flight command ended.
pub(crate) enum Done {
    Accepted,
    Refused {
        reference: Option<String>,
        correlation: String,
        join_room: Option<String>,
    },
}

/// A connection's commands: who they are sent as, the joins waiting for their answer,
/// and the publishes in flight.
pub(crate) struct Forwarder {
    gw: Arc<Gateway>,
    pub(crate) session: Arc<str>,
    pub(crate) claims: Claims,
    pub(crate) name: String,
    /// Joins by the correlation id of their command, until the answer comes.
    pending_joins: HashMap<String, String>,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
}

impl Forwarder {
    pub(crate) fn new(gw: Arc<Gateway>, session: Arc<str>, claims: Claims) -> Self {
        Forwarder {
            gw,
            session,
            name: claims.display_name(),
            claims,
            pending_joins: HashMap::new(),
            inflight: FuturesUnordered::new(),
        }
    }

    pub(crate) fn has_inflight(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// The next in-flight command to end (None when none is in flight).
    pub(crate) async fn next_done(&mut self) -> Option<Done> {
        self.inflight.next().await
    }

    /// The room a reply answers, when it answers a join of this connection.
    pub(crate) fn answered_join(&mut self, correlation: Option<String>) -> Option<String> {
        correlation.and_then(|c| self.pending_joins.remove(&c))
    }

    pub(crate) fn join(
        &mut self,
        reference: Option<String>,
        join: proto::client::Join,
        outlet: &Outlet,
        handle: &ConnHandle,
    ) {
        let room = join.room.clone();
        outlet.lock().rooms.start_joining(&room);
        // Registered before the join goes out: events from now on are held, none lost.
        self.gw.index.join(&room, &self.session, handle.clone());
        self.forward(reference, CommandBody::Join(join), Some(room));
    }

    pub(crate) fn leave(&mut self, reference: Option<String>, room: String, outlet: &Outlet) {
        let was_member = outlet.lock().rooms.remove(&room);
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
    fn command_for(&self, reference: Option<String>, body: CommandBody) -> Command {
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
    pub(crate) fn forward(
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
        // Every command starts a trace of its own here: a client frame carries none.
        let receive = hop_span!(
            "receive",
            kind = command.body.kind(),
            room = %command.room(),
            session = %self.session,
            reference = reference.as_deref(),
        );
        let root = trace::enter(&receive, None);
        tracing::debug!(
            target: trace::TARGET,
            parent: &receive,
            trace_id = %root.trace_id_hex(),
            session = %self.session,
            reference = reference.as_deref(),
            kind = command.body.kind(),
            "receive"
        );
        let publish = hop_span!("publish", kind = command.body.kind());
        let hop = trace::enter(&publish, Some(root));
        let broker = self.gw.broker.clone();
        self.inflight.push(Box::pin(
            async move {
                let bound = match &join_room {
                    Some(room) => broker.ensure(BindKey::Room(room.clone())).await,
                    None => Ok(()),
                };
                let published = match bound {
                    Ok(()) => broker.publish(&command, &correlation, &hop).await,
                    Err(e) => Err(e),
                };
                tracing::debug!(
                    target: trace::TARGET,
                    trace_id = %hop.trace_id_hex(),
                    span_id = %hop.span_id_hex(),
                    accepted = published.is_ok(),
                    "publish"
                );
                match published {
                    Ok(()) => Done::Accepted,
                    Err(_) => Done::Refused {
                        reference,
                        correlation,
                        join_room,
                    },
                }
            }
            .instrument(publish),
        ));
    }

    /// A command's publish ended: a refused one is answered `unavailable` (returned,
    /// for the connection to write), and a refused join forgets its room.
    pub(crate) fn finished(&mut self, done: Done, outlet: &Outlet) -> Option<ServerFrame> {
        let Done::Refused {
            reference,
            correlation,
            join_room,
        } = done
        else {
            return None;
        };
        self.pending_joins.remove(&correlation);
        if let Some(room) = join_room {
            self.drop_room(&room, outlet);
        }
        Some(ServerFrame::error(
            reference,
            ErrorCode::Unavailable,
            "the broker is unavailable; retry",
        ))
    }

    /// Forgets a room locally (a refused join, a kick) and lets its binding follow.
    pub(crate) fn drop_room(&mut self, room: &str, outlet: &Outlet) {
        let removed = outlet.lock().rooms.remove(room);
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
    pub(crate) async fn cleanup(self, outlet: &Outlet) {
        let gw = self.gw.clone();
        let rooms = outlet.lock().rooms.drain();
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
                    let hop = TraceParent::new_root();
                    if broker.publish(&command, &correlation, &hop).await.is_err() {
                        tracing::debug!("leave after close not published; presence will expire");
                    }
                }
            });
        }
    }
}
