//! Error codes carried in `error` frames and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    TooLarge,
    Forbidden,
    NotJoined,
    NoSuchRoom,
    Muted,
    Banned,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order docs/PROTOCOL.md lists them.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::NotJoined,
        ErrorCode::NoSuchRoom,
        ErrorCode::Muted,
        ErrorCode::Banned,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::NoSuchRoom => "no_such_room",
            ErrorCode::Muted => "muted",
            ErrorCode::Banned => "banned",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes used by Warren.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// The gateway is shutting down, or the connection was idle too long: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error (bad framing, RSV bits without an agreed extension).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame.
    pub const UNSUPPORTED: u16 = 1003;
    /// Invalid UTF-8, or compressed data that does not inflate.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Banned everywhere, too many bad frames.
    pub const POLICY: u16 = 1008;
    /// A message larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Slow consumer: the outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 1013;
    /// The token expired while connected.
    pub const TOKEN_EXPIRED: u16 = 4401;

    /// Every close code Warren sends.
    pub const ALL: [u16; 10] = [
        NORMAL,
        GOING_AWAY,
        PROTOCOL_ERROR,
        UNSUPPORTED,
        INVALID_PAYLOAD,
        POLICY,
        TOO_BIG,
        INTERNAL,
        SLOW_CONSUMER,
        TOKEN_EXPIRED,
    ];
}

/// HTTP refusal codes sent before the upgrade, as the `error` of the JSON body.
pub mod refusal {
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN_ORIGIN: &str = "forbidden_origin";
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
    pub const UNAVAILABLE: &str = "unavailable";

    /// Every refusal code.
    pub const ALL: [&str; 4] = [
        UNAUTHORIZED,
        FORBIDDEN_ORIGIN,
        TOO_MANY_CONNECTIONS,
        UNAVAILABLE,
    ];
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_error_code_is_listed_and_serialises_as_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
