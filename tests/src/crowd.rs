//! A room's members for a test, in one call: each user connected to its gateway and
//! joined to the room, one after the other.

use crate::{Client, Stack};

/// Connects each `(gateway, user)` in turn and joins it to `room`; the clients come back
/// in the same order.
pub async fn members<const N: usize>(
    stack: &Stack,
    room: &str,
    who: [(usize, &str); N],
) -> [Client; N] {
    let mut clients = Vec::with_capacity(N);
    for (gateway, user) in who {
        let mut client = stack.connect(gateway, user).await;
        client.join(room).await;
        clients.push(client);
    }
    match clients.try_into() {
        Ok(all) => all,
        Err(_) => unreachable!("one client per (gateway, user)"),
    }
}
