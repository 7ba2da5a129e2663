//! An AMQP command body, as a dispatcher reads it from a shard queue: arbitrary bytes
//! through `serde_json::from_slice::<Command>` and the dispatcher's intake
//! (`intake::read`), once as a gateway account and once as a bot. Neither may panic;
//! a command the intake accepts has a valid actor id and a bounded `ref`, a bot's
//! command acts as the bot whatever its body claims, and what parses serialises again.

#![no_main]

use dispatcher::intake;
use libfuzzer_sys::fuzz_target;
use proto::amqp::Command;
use proto::ids::{validate_user, MAX_REF_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = serde_json::from_slice::<Command>(data) {
        let again = serde_json::to_vec(&command).expect("a parsed command serialises");
        let _ = command.room();
        let _ = command.body.kind();
        assert!(serde_json::from_slice::<Command>(&again).is_ok());
    }
    let accounts = ["warren-gateway".to_owned()];
    for login in ["warren-gateway", "echo-bot"] {
        if let Ok(command) = intake::read(data, Some(login), &accounts) {
            assert!(validate_user(&command.actor.id).is_ok());
            assert!(command
                .reference
                .as_ref()
                .is_none_or(|r| r.len() <= MAX_REF_LEN));
            if login == "echo-bot" {
                assert_eq!(command.actor.id, "echo-bot");
                assert!(command.actor.bot && command.actor.roles.is_empty());
                assert!(command.conn.is_none());
            }
        }
    }
    assert!(intake::read(data, None, &accounts).is_err());
});
