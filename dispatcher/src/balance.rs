//! Sharing the shards among the live dispatchers.
//!
//! Every dispatcher subscribes to every command queue; single active consumer lets one
//! of them at a time receive a queue's commands, and hands the queue to the next
//! registered consumer when the active one goes. That is failover, and it needs nothing
//! from here. What this module adds is the share: with D dispatchers alive, each should
//! be active on about S/D shards, not the first one on all of them.
//!
//! - **Roster.** Each dispatcher renews its entry in a Redis sorted set every [`ROUND`]
//!   while it consumes, and reads the live entries back (by Redis's clock). Shard `i`
//!   goes to the `i mod D`-th live id in id order ([`Assignment::share`]): everyone
//!   computes the same assignment, and nobody holds more than ⌈S/D⌉.
//! - **Probes.** AMQP 0-9-1 does not tell a consumer that it became active, but a
//!   consumer that has had a delivery is the active one, and stays so until it goes
//!   ([`crate::metrics::DispatcherMetrics::set_shard_active`]). So a dispatcher probes
//!   each shard assigned to it that it does not know itself active on, every
//!   `PROBE_EVERY`: a message with an empty body, AMQP `type` = `probe` and its id in
//!   the `x-warren-dispatcher` header, published to the shard's routing key. Whoever is
//!   active receives it and acks it.
//! - **Handing over.** A dispatcher that receives the probe of the shard's assigned owner
//!   (its roster says so too) finishes what it holds (the command in hand, every publish
//!   confirmed, every handled delivery acked) and closes the shard's channel, which gives
//!   the unhandled prefetched deliveries back to the queue ahead of everything else; it
//!   then subscribes again, at the end of the queue's line of consumers. The next in line
//!   becomes active. If that is not the owner either, the owner's next probe reaches it
//!   and it hands over in turn, so the owner gets its shard within a few probes.
//!
//! Only the owner's own probe moves a shard: it proves the owner is alive and
//! subscribed. A dispatcher that died keeps its roster entry for up to [`ENTRY_TTL`], and
//! its shards, failed over to whoever was next in line, stay there meanwhile instead of
//! going round the survivors. Correctness never depends on who owns what: a handover is
//! a failover nobody had to die for, with the same guarantees (in-order acks, redelivery
//! of what was not acked, dedup). A consumer hands over no sooner than [`HOLD`] after it
//! subscribed, so a shard does not change hands faster than that.

use std::time::{Duration, Instant};

use common::amqp::lapin::options::BasicPublishOptions;
use common::amqp::lapin::types::{AMQPValue, FieldTable};
use common::amqp::lapin::{BasicProperties, Channel};
use proto::amqp::{shard_key, Names};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::DispatcherMetrics;
use crate::store::RoomStore;

/// How often a dispatcher renews its roster entry, reads the roster and probes.
pub const ROUND: Duration = Duration::from_secs(1);

/// How long a roster entry lives without renewal: a dispatcher that dies drops out of
/// the share this long after its last round (its shards failed over at once, to the
/// next consumer in line; this only decides who keeps them).
pub const ENTRY_TTL: Duration = Duration::from_secs(5);

/// A consumer hands its shard over no sooner than this after subscribing.
pub const HOLD: Duration = Duration::from_secs(2);

/// A shard is probed again only this long after the last probe. A probe waits behind
/// whatever the queue holds; the next one only goes out a round later.
const PROBE_EVERY: Duration = ROUND;

/// The AMQP `type` of a probe.
pub const PROBE_TYPE: &str = "probe";

/// The header that names a probe's dispatcher.
pub const PROBE_FROM_HEADER: &str = "x-warren-dispatcher";

/// Who should be the active consumer of each shard, as one dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    me: String,
    /// Shard → its owner's id.
    owners: Vec<String>,
}

impl Assignment {
    /// Every shard to `me`: a dispatcher alone, or before it has read the roster.
    pub fn everything(shards: u32, me: &str) -> Assignment {
        Assignment::share(shards, &[], me)
    }

    /// Shard `i` goes to the `i mod D`-th of the `D` live dispatchers, in id order.
    /// `roster` is sorted; `me` counts as live even if the roster missed it.
    pub fn share(shards: u32, roster: &[String], me: &str) -> Assignment {
        let mut live: Vec<&str> = roster.iter().map(String::as_str).collect();
        if let Err(at) = live.binary_search(&me) {
            live.insert(at, me);
        }
        let owners = (0..shards as usize)
            .map(|i| live[i % live.len()].to_owned())
            .collect();
        Assignment {
            me: me.to_owned(),
            owners,
        }
    }

    pub fn is_mine(&self, shard: u32) -> bool {
        self.owner(shard) == Some(self.me.as_str())
    }

    /// Whether `from`, who probed `shard`, is its owner and somebody else than me: the
    /// active consumer that receives the probe hands the shard over.
    pub fn hands_over_to(&self, shard: u32, from: &str) -> bool {
        from != self.me && self.owner(shard) == Some(from)
    }

    pub fn owner(&self, shard: u32) -> Option<&str> {
        self.owners.get(shard as usize).map(String::as_str)
    }

    pub fn count(&self) -> usize {
        self.owners.iter().filter(|o| **o == self.me).count()
    }
}

/// Renews the roster, gives the shards the assignment and probes, every
/// [`ROUND`] until `stop`; then leaves the roster. Runs while the dispatcher consumes.
pub struct Balancer {
    pub id: String,
    pub shards: u32,
    pub store: RoomStore,
    pub names: Names,
    /// A channel of the consuming connection, for probes.
    pub channel: Channel,
    pub assignment: watch::Sender<Assignment>,
    pub metrics: std::sync::Arc<DispatcherMetrics>,
}

impl Balancer {
    pub async fn run(self, stop: CancellationToken) {
        let mut probed: Vec<Option<Instant>> = vec![None; self.shards as usize];
        let mut ticks = tokio::time::interval(ROUND);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match self.store.renew_roster(&self.id, ENTRY_TTL).await {
                Ok(roster) => {
                    let assignment = Assignment::share(self.shards, &roster, &self.id);
                    self.metrics.dispatchers.set(roster.len() as i64);
                    self.metrics.shards_assigned.set(assignment.count() as i64);
                    self.assignment.send_if_modified(|current| {
                        let changed = *current != assignment;
                        *current = assignment;
                        changed
                    });
                }
                Err(e) => {
                    // Keep the last assignment: everyone else is cut off from the same
                    // Redis, and commands wait for it anyway.
                    tracing::warn!(error = %e, "roster not renewed");
                }
            }
            self.probe(&mut probed).await;
        }
        if let Err(e) = self.store.leave_roster(&self.id).await {
            tracing::debug!(error = %e, "roster entry not removed; it expires on its own");
        }
    }

    /// Probes every shard assigned to this dispatcher that it does not know itself
    /// active on, unless probed lately.
    async fn probe(&self, probed: &mut [Option<Instant>]) {
        let assignment = self.assignment.borrow().clone();
        let mut headers = FieldTable::default();
        headers.insert(
            PROBE_FROM_HEADER.into(),
            AMQPValue::LongString(self.id.clone().into()),
        );
        let properties = BasicProperties::default()
            .with_type(PROBE_TYPE.into())
            .with_headers(headers);
        for (shard, last) in (0..self.shards).zip(probed.iter_mut()) {
            let due = last.is_none_or(|at| at.elapsed() >= PROBE_EVERY);
            if !assignment.is_mine(shard) || self.metrics.is_shard_active(shard) || !due {
                continue;
            }
            *last = Some(Instant::now());
            let published = self
                .channel
                .basic_publish(
                    self.names.commands_exchange().into(),
                    shard_key(shard).into(),
                    BasicPublishOptions::default(),
                    &[],
                    properties.clone(),
                )
                .await;
            if let Err(e) = published {
                tracing::debug!(shard, error = %e, "probe not published");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn shares_are_even_and_disjoint() {
        for d in 1..=5usize {
            for shards in [1u32, 4, 16, 17, 64] {
                let roster: Vec<String> = (0..d).map(|i| format!("d{i}")).collect();
                let shares: Vec<Assignment> = roster
                    .iter()
                    .map(|me| Assignment::share(shards, &roster, me))
                    .collect();
                let ceil = (shards as usize).div_ceil(d);
                for shard in 0..shards {
                    let owners = shares.iter().filter(|a| a.is_mine(shard)).count();
                    assert_eq!(owners, 1, "shard {shard} of {shards} with {d} dispatchers");
                }
                for share in &shares {
                    assert!(share.count() <= ceil && share.count() >= shards as usize / d);
                }
            }
        }
    }

    #[test]
    fn a_dispatcher_missing_from_the_roster_counts_itself() {
        let a = Assignment::share(4, &ids(&["a", "c"]), "b");
        assert_eq!(a, Assignment::share(4, &ids(&["a", "b", "c"]), "b"));
        assert_eq!(a.count(), 1);
        assert!(a.is_mine(1));
    }

    #[test]
    fn alone_means_everything() {
        assert_eq!(
            Assignment::share(8, &ids(&["x"]), "x"),
            Assignment::everything(8, "x")
        );
        assert_eq!(Assignment::everything(8, "x").count(), 8);
        assert!(!Assignment::everything(2, "x").is_mine(2));
    }

    #[test]
    fn only_the_owners_probe_moves_a_shard() {
        let roster = ids(&["a", "b"]);
        let a = Assignment::share(4, &roster, "a");
        assert!(a.hands_over_to(1, "b"), "b owns shard 1");
        assert!(!a.hands_over_to(0, "b"), "shard 0 is a's");
        assert!(!a.hands_over_to(1, "c"), "c is not in a's roster");
        assert!(!a.hands_over_to(0, "a"), "a's own probe");
    }
}
