//! Tokens as a client's identity provider would issue them: JWT HS256 over a stack's
//! secret, plus the malformed and hostile ones the gateway must refuse.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The claims Warren reads (PROTOCOL.md, "Connecting").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

impl Claims {
    /// `user`, valid for an hour, no display name, no roles.
    pub fn new(user: &str) -> Claims {
        Claims {
            sub: user.to_owned(),
            exp: now_s() + 3600,
            name: None,
            roles: None,
        }
    }

    pub fn name(mut self, name: &str) -> Claims {
        self.name = Some(name.to_owned());
        self
    }

    pub fn roles(mut self, roles: &[&str]) -> Claims {
        self.roles = Some(roles.iter().map(|r| (*r).to_owned()).collect());
        self
    }

    /// Expires `secs` seconds from now.
    pub fn expires_in(mut self, secs: u64) -> Claims {
        self.exp = now_s() + secs;
        self
    }

    /// Expired `secs` seconds ago (pick more than the gateway's leeway, 30 s by default).
    pub fn expired_since(mut self, secs: u64) -> Claims {
        self.exp = now_s().saturating_sub(secs);
        self
    }
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(secret: &str, claims: &Claims) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail with a secret key")
}

/// base64url of `{"alg":"none","typ":"JWT"}`, written out so the test needs no encoder.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// An unsigned token (`alg: none`, empty signature) carrying the same claims as
/// `signed`, which must be a well-formed JWT. A server that trusted the header's
/// algorithm would accept it.
pub fn alg_none_from(signed: &str) -> String {
    let payload = signed
        .split('.')
        .nth(1)
        .expect("a JWT has a payload segment");
    format!("{ALG_NONE_HEADER}.{payload}.")
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_none_token_keeps_the_claims_and_drops_the_signature() {
        let signed = sign_hs256("s", &Claims::new("alice"));
        let forged = alg_none_from(&signed);
        let parts: Vec<&str> = forged.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], signed.split('.').nth(1).unwrap());
        assert_eq!(parts[2], "");
    }
}
