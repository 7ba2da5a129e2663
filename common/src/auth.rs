//! JWT verification with the algorithm pinned by configuration.
//!
//! A token is accepted only if it is signed with the configured algorithm and key, has
//! `sub` (a valid user id) and `exp` (checked with a leeway of at most 60 s). Anything
//! else — `alg: none`, an HS/RS swap, a missing claim — is one error: unauthorized.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::settings::AuthSettings;

/// The claims Warren reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    /// The display name: `name`, else the user id.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) if !n.trim().is_empty() => n.chars().take(64).collect(),
            _ => self.sub.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("auth configuration: {0}")]
    Config(String),
}

/// Checks tokens. Cheap to clone behind an `Arc`; built once at start.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

fn algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthError::Config(format!(
            "unsupported algorithm {other:?}"
        ))),
    }
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Result<Verifier, AuthError> {
        let alg = algorithm(&settings.algorithm)?;
        let key = match alg {
            Algorithm::HS256 => {
                if settings.secret.expose().is_empty() {
                    return Err(AuthError::Config("auth.secret is empty".into()));
                }
                DecodingKey::from_secret(settings.secret.expose().as_bytes())
            }
            _ => {
                let path = settings
                    .public_key_file
                    .as_deref()
                    .ok_or_else(|| AuthError::Config("auth.public_key_file is required".into()))?;
                let pem = std::fs::read(path)
                    .map_err(|e| AuthError::Config(format!("reading {path}: {e}")))?;
                let key = if alg == Algorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ed_pem(&pem)
                };
                key.map_err(|e| AuthError::Config(format!("public key: {e}")))?
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = settings.leeway_s.min(60);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Ok(Verifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        proto::ids::validate_user(&claims.sub)
            .map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        Ok(claims)
    }
}

/// Mints an HS256 token (development and tests; production tokens come from your
/// identity provider).
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, AuthError> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            algorithm: "HS256".into(),
            secret: Secret::new(secret),
            public_key_file: None,
            leeway_s: 5,
            insecure_dev_auth_on_network: false,
        }
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            name: Some("Alice".into()),
            roles: vec!["admin".into()],
        }
    }

    fn later() -> u64 {
        crate::now_ms() / 1000 + 3600
    }

    #[test]
    fn a_good_token_verifies() {
        let v = Verifier::new(&settings("k")).unwrap();
        let t = mint_hs256("k", &claims("alice", later())).unwrap();
        assert_eq!(v.verify(&t).unwrap(), claims("alice", later()));
    }

    #[test]
    fn wrong_key_expired_and_bad_sub_are_refused() {
        let v = Verifier::new(&settings("k")).unwrap();
        assert!(v
            .verify(&mint_hs256("other", &claims("alice", later())).unwrap())
            .is_err());
        let past = crate::now_ms() / 1000 - 120;
        assert!(v
            .verify(&mint_hs256("k", &claims("alice", past)).unwrap())
            .is_err());
        assert!(v
            .verify(&mint_hs256("k", &claims("a.b", later())).unwrap())
            .is_err());
        assert!(v.verify("not-a-token").is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        use base64_like::b64;
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(format!(r#"{{"sub":"alice","exp":{}}}"#, later()).as_bytes());
        let v = Verifier::new(&settings("k")).unwrap();
        assert!(v.verify(&format!("{header}.{payload}.")).is_err());
    }

    #[test]
    fn a_token_signed_with_another_algorithm_is_refused() {
        let v = Verifier::new(&settings("k")).unwrap();
        let t = encode(
            &Header::new(Algorithm::HS384),
            &claims("alice", later()),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(v.verify(&t).is_err());
    }

    /// Base64url without padding, enough to forge a test token by hand.
    mod base64_like {
        pub fn b64(data: &[u8]) -> String {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
