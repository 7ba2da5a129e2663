//! Tokens as a client's identity provider would issue them: JWT HS256 over a stack's
//! secret, any registered claim (`nbf`, `iat`, `iss`, `aud`), JSON Web Key Sets of
//! public keys for a gateway to trust, plus the malformed and hostile tokens the gateway
//! must refuse.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Value>,
}

impl Claims {
    /// `user`, valid for an hour, no display name, no roles.
    pub fn new(user: &str) -> Claims {
        Claims {
            sub: user.to_owned(),
            exp: now_s() + 3600,
            name: None,
            roles: None,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
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

    /// Expires at `exp`, unix seconds.
    pub fn expires_at(mut self, exp: u64) -> Claims {
        self.exp = exp;
        self
    }

    /// Not valid before `nbf`, unix seconds.
    pub fn not_before(mut self, nbf: u64) -> Claims {
        self.nbf = Some(nbf);
        self
    }

    /// Issued at `iat`, unix seconds.
    pub fn issued_at(mut self, iat: u64) -> Claims {
        self.iat = Some(iat);
        self
    }

    pub fn issuer(mut self, iss: &str) -> Claims {
        self.iss = Some(iss.to_owned());
        self
    }

    /// `aud` as given: a JSON string or array.
    pub fn audience(mut self, aud: Value) -> Claims {
        self.aud = Some(aud);
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

/// Signs `claims` with `alg` and `key`, naming the key `kid` in the header.
pub fn sign_kid(alg: Algorithm, kid: &str, claims: &Claims, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, key).expect("signing a test token")
}

/// An Ed25519 private key (PKCS#8 PEM) made by the `openssl` CLI under `dir`.
pub fn ed25519_private_pem(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::create_dir_all(dir)?;
    let private = dir.join(format!("{name}-ed25519.pem"));
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .output()
        .context("run openssl genpkey")?;
    if !made.status.success() {
        bail!("openssl genpkey: {}", String::from_utf8_lossy(&made.stderr));
    }
    Ok(std::fs::read(&private)?)
}

/// Writes to `path` a JSON Web Key Set (RFC 7517) holding the public half of each
/// private key, under its `kid` and with its `alg`: what an identity provider publishes.
pub fn write_jwks(path: &Path, keys: &[(&str, Algorithm, &EncodingKey)]) -> anyhow::Result<()> {
    let keys = keys
        .iter()
        .map(|(kid, alg, key)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg)?;
            jwk.common.key_id = Some((*kid).to_owned());
            Ok(jwk)
        })
        .collect::<anyhow::Result<Vec<Jwk>>>()?;
    std::fs::write(path, serde_json::to_vec_pretty(&JwkSet { keys })?)?;
    Ok(())
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
