//! The store's Redis keys: the layout is the contract's, [`proto::keys`] (the gateways
//! read some of the same keys). What is checked here is what Redis Cluster makes of it
//! for the dispatcher's own scripts and pipelines.

pub use proto::keys::{Dedup, Keys};

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use super::*;

    /// Redis Cluster runs a script, a transaction or a pipeline only when all its keys
    /// hash to one slot: these are the key lists the store hands each of them.
    #[test]
    fn every_script_and_pipeline_touches_one_slot() {
        let k = Keys::new("w");
        let one_slot = |what: &str, keys: &[String]| {
            let slots: Vec<Slot> = keys.iter().map(Slot::for_key).collect();
            assert!(
                slots.windows(2).all(|w| w[0] == w[1]),
                "{what}: {keys:?} span slots {slots:?}"
            );
        };
        for room in ["r", "general", "dm:alice:bob"] {
            let refd = Dedup::Ref {
                room,
                user: "bob",
                reference: "r1",
            };
            let delivered = Dedup::Delivery {
                room,
                user: "bob",
                message_id: "m-1",
            };
            one_slot("append.lua", &k.append(room, None));
            one_slot("append.lua with a ref", &k.append(room, Some(&refd)));
            one_slot(
                "append.lua with a message id",
                &k.append(room, Some(&delivered)),
            );
            one_slot("state.lua", &[k.epoch(room), k.seq(room)]);
            one_slot("create.lua, configure.lua", &[k.meta(room), k.roles(room)]);
            one_slot(
                "the dedup and standing pipeline",
                &[
                    k.dedup(&refd),
                    k.meta(room),
                    k.roles(room),
                    k.mute(room, "bob"),
                    k.ban(room, "bob"),
                ],
            );
            one_slot(
                "missed, delete_message",
                &[k.history(room), k.floor(room), k.ids(room)],
            );
        }
        // holders.lua is given the registry and reads each live gateway's users' set
        // by the name it builds from `registry()`: that name must be the gateway's own
        // and share the registry's slot.
        let built = |gw: &str| format!("{}:{gw}:users", k.registry());
        assert_eq!(built("g-1"), k.gateway_users("g-1"));
        one_slot(
            "holders.lua, a gateway's renewal, alive_gateways",
            &[
                k.gateways(),
                built("g-1"),
                built("g-2"),
                k.gateway_alive("g-1"),
                k.gateway_alive("g-2"),
            ],
        );
    }
}
