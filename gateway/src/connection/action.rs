//! What the connection's loop is told to do: an [`Action`] from the checks on an
//! inbound frame ([`super::frames`]), and the [`Ending`] that stops the loop.

use proto::amqp::CommandBody;
use proto::client::Join;
use proto::server::ServerFrame;

/// What the loop does about one inbound frame.
pub(crate) enum Action {
    /// Nothing (a pong, a frame refused without an answer).
    Nothing,
    /// Answer the client: an error, or the `pong` to a `ping` frame.
    Answer(ServerFrame),
    /// Answer the client, then close: a bad frame that was one too many.
    AnswerAndClose(ServerFrame, Ending),
    /// Answer a WebSocket ping with its payload.
    Pong(Vec<u8>),
    /// Join a room (`ref`, the frame).
    Join(Option<String>, Join),
    /// Leave a room (`ref`, the room).
    Leave(Option<String>, String),
    /// Forward a checked command to the dispatchers (`ref`, the command).
    Forward(Option<String>, CommandBody),
    /// Close the connection.
    Close(Ending),
}

/// Why the loop stopped, and what to tell the client.
pub(crate) struct Ending {
    pub(crate) code: Option<u16>,
    pub(crate) reason: &'static str,
}

impl Ending {
    pub(crate) fn close(code: u16, reason: &'static str) -> Ending {
        Ending {
            code: Some(code),
            reason,
        }
    }

    /// The TCP connection is gone or unusable: no close frame.
    pub(crate) fn gone(reason: &'static str) -> Ending {
        Ending { code: None, reason }
    }
}
