//! The binder: keeps the gateway queue's bindings equal to local membership.
//!
//! One task decides every binding change and keeps at most one change per key on the
//! broker at a time, so a bind and an unbind of the same key never overtake each other.
//! Changes of different keys run side by side, spread over [`BIND_CHANNELS`] channels:
//! RabbitMQ runs one channel's methods one after another, and a binding to a durable
//! queue is a metadata transaction, so with a single channel every new session waited
//! for every bind and unbind queued before its own (about 470 sessions/s here).
//!
//! A request only says "make this key follow membership": the binder compares what
//! the index wants with what is bound when the key's turn comes, so requests for one
//! key collapse into one change, and a release and a new session of the same user
//! cancel out without reaching the broker.
//!
//! A bind is in doubt from when it is sent until the broker confirms it: if the
//! connection drops first, the broker may have applied it or not. Such keys are not
//! counted as bound (no `welcome` rests on them), but the resync after the reconnect
//! unbinds them unless they are wanted, so a lost confirm leaves no binding behind
//! (unbinding a binding that does not exist is harmless).
//!
//! Users need no binding: user-addressed events reach this gateway through its own key
//! [`BindKey::Own`] (`gw.<id>`), which the dispatcher names in the event's `CC` header
//! for the gateways that hold the user (see `liveness.rs`). It is wanted for as long as
//! the gateway runs, so the resync after every (re)connect binds it before the gateway
//! says it is ready, and sessions opening and closing never reach the broker. It is
//! kept in the same bookkeeping as every other key (a resync re-applies it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use common::amqp::lapin::options::QueueBindOptions;
use common::amqp::lapin::types::FieldTable;
use common::amqp::lapin::Channel;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use proto::amqp::{gateway_key, room_binding};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Unavailable;
use crate::index::Index;
use crate::repair::Marks;

/// Control channels the binder spreads binding changes over, and so the most changes
/// on the broker at once. Bind + unbind on a durable queue, measured with a throwaway
/// lapin client on the 2-core bench machine (busy, so ranges): one channel 600–900
/// changes/s, whether one or 32 are in flight on it; 8 channels 1,400–1,700; 32
/// channels 2,000–3,400; 128 about the same as 32 when the gateway drives them (about
/// 1,250 sessions/s either way: RabbitMQ's CPU is the limit).
pub const BIND_CHANNELS: usize = 32;

/// What a binding follows: a room's local members, or the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindKey {
    /// `room.<room>.#` (dm rooms included), while the room has a local member.
    Room(String),
    /// `gw.<id>`, this gateway's own key, wanted while it runs: the `CC` of user events.
    Own(String),
}

impl BindKey {
    fn routing_key(&self) -> String {
        match self {
            BindKey::Room(r) => room_binding(r),
            BindKey::Own(id) => gateway_key(id),
        }
    }
}

type Reply = oneshot::Sender<Result<(), Unavailable>>;

enum BindOp {
    Reconcile(BindKey, Option<Reply>),
    Resync(Reply),
}

/// The receiving end of the binder's queue, handed to [`Bindings::run`].
pub struct BinderInbox(mpsc::Receiver<BindOp>);

/// A binding change: bind (`true`) or unbind `routing_key`.
struct Change {
    routing_key: String,
    bind: bool,
}

/// The gateway queue's bindings: what is bound, what is in doubt, and the channels
/// changes go out on while the broker link is up.
pub struct Bindings {
    gateway_id: String,
    queue: String,
    exchange: String,
    index: Arc<Index>,
    /// Where each room with local members stands (gap repair).
    marks: Arc<Marks>,
    /// The link's control channels, [`BIND_CHANNELS`] of them; none while it is down.
    channels: RwLock<Option<Arc<[Channel]>>>,
    bound: Mutex<HashSet<String>>,
    /// Binds sent but not confirmed: they may exist on the broker.
    in_doubt: Mutex<HashSet<String>>,
    binder: mpsc::Sender<BindOp>,
    /// Counts binding changes, to take the control channels in turn.
    next_channel: AtomicUsize,
}

impl Bindings {
    /// The bindings of `queue` to `exchange`, and the receiver their binder task drains.
    pub fn new(
        gateway_id: &str,
        queue: &str,
        exchange: String,
        index: Arc<Index>,
        marks: Arc<Marks>,
    ) -> (Bindings, BinderInbox) {
        let (tx, rx) = mpsc::channel(4096);
        let bindings = Bindings {
            gateway_id: gateway_id.to_owned(),
            queue: queue.to_owned(),
            exchange,
            index,
            marks,
            channels: RwLock::new(None),
            bound: Mutex::new(HashSet::new()),
            in_doubt: Mutex::new(HashSet::new()),
            binder: tx,
            next_channel: AtomicUsize::new(0),
        };
        (bindings, BinderInbox(rx))
    }

    /// How many routing keys the queue is bound to.
    pub fn count(&self) -> usize {
        self.bound_set().len()
    }

    /// The routing keys bound to the queue right now, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.bound_set().iter().cloned().collect();
        keys.sort();
        keys
    }

    /// The control channels of a new link, or none when it is lost.
    pub fn set_channels(&self, channels: Option<Arc<[Channel]>>) {
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = channels;
    }

    fn channels(&self) -> Option<Arc<[Channel]>> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn bound_set(&self) -> MutexGuard<'_, HashSet<String>> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a (re)connect, through the binder: every wanted key bound again and the
    /// stale ones unbound ([`Bindings::resync`]).
    pub async fn restore(&self) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.binder
            .send(BindOp::Resync(tx))
            .await
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)?
    }

    /// Makes the binding of `key` follow local membership now, and waits until it does.
    pub async fn ensure(&self, key: BindKey) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.binder
            .send(BindOp::Reconcile(key, Some(tx)))
            .await
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)?
    }

    /// Asks for `key`'s binding to follow local membership, without waiting. A room
    /// left without local members also loses its gap-repair mark.
    pub async fn release(&self, key: BindKey) {
        if let BindKey::Room(room) = &key {
            if !self.index.room_has_members(room) {
                self.marks.forget(room);
            }
        }
        if self
            .binder
            .send(BindOp::Reconcile(key, None))
            .await
            .is_err()
        {
            tracing::debug!("binder stopped; binding left to the queue's expiry");
        }
    }

    fn wanted(&self, key: &BindKey) -> bool {
        match key {
            // Dm rooms too: their members get the room's events (and its gaps repaired)
            // like any room's; the users' own copies reach them through `Own`.
            BindKey::Room(r) => self.index.room_has_members(r),
            BindKey::Own(id) => *id == self.gateway_id,
        }
    }

    /// The change that makes `key` follow local membership, if it does not already.
    fn change_for(&self, key: &BindKey) -> Option<Change> {
        let bind = self.wanted(key);
        let routing_key = key.routing_key();
        let bound = self.bound_set().contains(&routing_key);
        (bind != bound).then_some(Change { routing_key, bind })
    }

    async fn reconcile(&self, key: &BindKey) -> Result<(), Unavailable> {
        match self.change_for(key) {
            Some(change) => self.apply(change).await,
            None => Ok(()),
        }
    }

    fn in_doubt_set(&self) -> MutexGuard<'_, HashSet<String>> {
        self.in_doubt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds or unbinds one routing key on the broker, and remembers the result. Each
    /// call takes the next control channel in turn.
    async fn apply(&self, change: Change) -> Result<(), Unavailable> {
        let Change { routing_key, bind } = change;
        let control = self.channels().ok_or(Unavailable)?;
        if bind {
            // Until confirmed, even if this future is dropped on the way.
            self.in_doubt_set().insert(routing_key.clone());
        }
        let turn = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let channel = &control[turn % control.len()];
        let (queue, exchange) = (self.queue.clone(), self.exchange.clone());
        let result = if bind {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    routing_key.clone().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        } else {
            channel
                .queue_unbind(
                    queue.into(),
                    exchange.into(),
                    routing_key.clone().into(),
                    FieldTable::default(),
                )
                .await
        };
        match result {
            Ok(()) => {
                if bind {
                    self.bound_set().insert(routing_key.clone());
                    self.in_doubt_set().remove(&routing_key);
                } else {
                    self.bound_set().remove(&routing_key);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, key = %routing_key, "binding change failed");
                Err(Unavailable)
            }
        }
    }

    /// After a (re)connect: binds the gateway's own key and every room that has local
    /// members again (binding is idempotent, and the queue may have expired with its
    /// bindings while the broker was away), then unbinds the keys bound or in doubt
    /// before that have none any more (their release may have failed while the link was
    /// down). Keys go side by side, as in the binder.
    async fn resync(&self) -> Result<(), Unavailable> {
        let mut before: HashSet<String> = self.bound_set().drain().collect();
        before.extend(self.in_doubt_set().drain());
        let keys = std::iter::once(BindKey::Own(self.gateway_id.clone()))
            .chain(self.index.rooms().into_iter().map(BindKey::Room));
        stream::iter(keys.map(Ok))
            .try_for_each_concurrent(
                BIND_CHANNELS,
                |key| async move { self.reconcile(&key).await },
            )
            .await?;
        let stale: Vec<String> = {
            let bound = self.bound_set();
            before.into_iter().filter(|k| !bound.contains(k)).collect()
        };
        stream::iter(stale.into_iter().map(Ok))
            .try_for_each_concurrent(BIND_CHANNELS, |routing_key| {
                self.apply(Change {
                    routing_key,
                    bind: false,
                })
            })
            .await
    }

    /// The binder: takes every request as it comes and applies up to [`BIND_CHANNELS`]
    /// changes at once, each asker answered when its key's change is confirmed.
    pub async fn run(self: Arc<Self>, mut inbox: BinderInbox, shutdown: CancellationToken) {
        let mut binder = Binder::new(&self);
        loop {
            tokio::select! {
                Some((key, result)) = binder.changes.next() => binder.landed(key, result),
                op = inbox.0.recv(), if binder.changes.len() < BIND_CHANNELS => match op {
                    Some(BindOp::Reconcile(key, reply)) => binder.ask(key, reply),
                    Some(BindOp::Resync(reply)) => {
                        // The resync rebuilds the bound set: nothing else may change it.
                        binder.settle().await;
                        reply.send(self.resync().await).ok();
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The binder task's state: the changes on the broker and who waits for each.
struct Binder<'a> {
    bindings: &'a Bindings,
    /// Changes in flight, each ending with its key and outcome.
    changes: FuturesUnordered<BoxFuture<'a, (BindKey, Result<(), Unavailable>)>>,
    /// For each key with a change in flight, the askers that change answers.
    waiting: HashMap<BindKey, Vec<Reply>>,
    /// Keys asked about again while their change was in flight, with their askers:
    /// reconciled once that change lands.
    again: HashMap<BindKey, Vec<Reply>>,
}

impl<'a> Binder<'a> {
    fn new(bindings: &'a Bindings) -> Self {
        Binder {
            bindings,
            changes: FuturesUnordered::new(),
            waiting: HashMap::new(),
            again: HashMap::new(),
        }
    }

    fn ask(&mut self, key: BindKey, reply: Option<Reply>) {
        if self.waiting.contains_key(&key) {
            self.again.entry(key).or_default().extend(reply);
        } else {
            self.start(key, reply.into_iter().collect());
        }
    }

    /// Starts the change `key` needs now, or answers at once when it needs none.
    fn start(&mut self, key: BindKey, replies: Vec<Reply>) {
        let Some(change) = self.bindings.change_for(&key) else {
            answer(replies, Ok(()));
            return;
        };
        let bindings = self.bindings;
        let landing = key.clone();
        self.changes.push(Box::pin(
            async move { (landing, bindings.apply(change).await) },
        ));
        self.waiting.insert(key, replies);
    }

    fn landed(&mut self, key: BindKey, result: Result<(), Unavailable>) {
        answer(self.waiting.remove(&key).unwrap_or_default(), result);
        if let Some(replies) = self.again.remove(&key) {
            self.start(key, replies);
        }
    }

    /// Waits until no change is in flight, the ones asked for again included.
    async fn settle(&mut self) {
        while let Some((key, result)) = self.changes.next().await {
            self.landed(key, result);
        }
    }
}

fn answer(replies: Vec<Reply>, result: Result<(), Unavailable>) {
    for reply in replies {
        // The asker may have gone (its connection closed); nothing to tell.
        reply.send(result).ok();
    }
}
