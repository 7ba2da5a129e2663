//! JWT verification with keys and algorithms pinned by configuration.
//!
//! A token is accepted only if it is signed by a configured key with that key's
//! algorithm ([`keys`]: the default key, or the key its `kid` names), and its claims
//! hold: `sub` a valid user id; `exp` present and not reached, `nbf` reached (both with
//! `auth.leeway_s`, at most 60 s); `iss` and `aud` when configured; a lifetime within
//! `auth.max_lifetime_s`. Anything else — `alg: none`, an HS/RS swap, a missing claim —
//! is one error: unauthorized.

mod keys;

use jsonwebtoken::{decode, decode_header, encode, Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::settings::AuthSettings;
use keys::Keys;

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

/// What a token is decoded into: the claims, and `iat` for the lifetime rule only.
#[derive(Deserialize)]
struct Decoded {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    iat: Option<u64>,
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
    keys: Keys,
    leeway_s: u64,
    max_lifetime_s: u64,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Result<Verifier, AuthError> {
        let leeway_s = settings.leeway_s.min(60);
        if settings.max_lifetime_s == 0 {
            return Err(AuthError::Config(
                "auth.max_lifetime_s must be at least 1".into(),
            ));
        }
        let mut rules = Validation::new(Algorithm::HS256);
        rules.leeway = leeway_s;
        // RFC 7519 §4.1.4: not accepted on or after `exp`. jsonwebtoken accepts a token
        // during its `exp` second unless told to refuse one with less than 1 s left.
        rules.reject_tokens_expiring_in_less_than = 1;
        rules.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &settings.issuer {
            if issuer.is_empty() {
                return Err(AuthError::Config(
                    "auth.issuer is empty; leave it out to not check iss".into(),
                ));
            }
            rules.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &settings.audience {
            Some(audience) if audience.is_empty() => {
                return Err(AuthError::Config(
                    "auth.audience is empty; leave it out to not check aud".into(),
                ));
            }
            Some(audience) => {
                rules.set_audience(&[audience]);
                required.push("aud");
            }
            // RFC 7519 would refuse any `aud` we cannot find ourselves in; with no
            // audience configured there is nothing to look for, so `aud` is not read.
            None => {
                rules.validate_aud = false;
                if settings.jwks_file.is_some() {
                    tracing::warn!(
                        "auth.jwks_file without auth.audience: tokens the identity provider \
                         issued for other services are accepted too"
                    );
                }
            }
        }
        rules.set_required_spec_claims(&required);
        Ok(Verifier {
            keys: Keys::load(settings, &rules)?,
            leeway_s,
            max_lifetime_s: settings.max_lifetime_s,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::Invalid(e.to_string());
        let header = decode_header(token).map_err(invalid)?;
        let key = self
            .keys
            .select(header.kid.as_deref())
            .ok_or_else(|| AuthError::Invalid("no configured key for this kid".into()))?;
        let Decoded { claims, iat } = decode::<Decoded>(token, &key.key, &key.validation)
            .map_err(invalid)?
            .claims;
        self.check_lifetime(claims.exp, iat, crate::now_ms() / 1000)?;
        proto::ids::validate_user(&claims.sub)
            .map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        Ok(claims)
    }

    /// Refuses a token valid for longer than `auth.max_lifetime_s`, by its own account
    /// (`exp - iat`) and from now (`exp - now`, beyond the leeway): `iat` is whatever
    /// the issuer wrote, or absent, so it alone bounds nothing.
    fn check_lifetime(&self, exp: u64, iat: Option<u64>, now: u64) -> Result<(), AuthError> {
        let issued_for = iat.map_or(0, |iat| exp.saturating_sub(iat));
        let left = exp.saturating_sub(now);
        if issued_for > self.max_lifetime_s || left > self.max_lifetime_s + self.leeway_s {
            return Err(AuthError::Invalid(format!(
                "valid for longer than auth.max_lifetime_s ({} s)",
                self.max_lifetime_s
            )));
        }
        Ok(())
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

    pub(super) fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            algorithm: "HS256".into(),
            secret: Secret::new(secret),
            public_key_file: None,
            secrets: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_s: 5,
            max_lifetime_s: 86_400,
            insecure_dev_auth_on_network: false,
        }
    }

    pub(super) fn now() -> u64 {
        crate::now_ms() / 1000
    }

    /// An HS256 token over any JSON claims.
    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
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

    #[test]
    fn a_token_is_refused_from_its_exp_second_on() {
        let strict = Verifier::new(&AuthSettings {
            leeway_s: 0,
            ..settings("k")
        })
        .unwrap();
        let at = |exp: u64| hs256("k", serde_json::json!({"sub": "alice", "exp": exp}));
        assert!(strict.verify(&at(now())).is_err(), "exp == now");
        assert!(strict.verify(&at(now() + 5)).is_ok());
        // The leeway moves the boundary, not the rule: refused once now >= exp + leeway.
        let lenient = Verifier::new(&settings("k")).unwrap();
        assert!(
            lenient.verify(&at(now() - 5)).is_err(),
            "exp + leeway == now"
        );
        assert!(lenient.verify(&at(now() - 2)).is_ok());
    }

    #[test]
    fn a_token_is_refused_before_its_nbf_beyond_the_leeway() {
        let v = Verifier::new(&settings("k")).unwrap();
        let nbf = |nbf: u64| {
            hs256(
                "k",
                serde_json::json!({"sub": "alice", "exp": later(), "nbf": nbf}),
            )
        };
        assert!(v.verify(&nbf(now() + 60)).is_err());
        assert!(v.verify(&nbf(now() + 2)).is_ok(), "within the leeway");
        assert!(v.verify(&nbf(now() - 10)).is_ok());
        let malformed = hs256(
            "k",
            serde_json::json!({"sub": "alice", "exp": later(), "nbf": "soon"}),
        );
        assert!(v.verify(&malformed).is_err());
    }

    #[test]
    fn iss_is_checked_when_an_issuer_is_configured() {
        let token = |iss: Option<&str>| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": later()});
            if let Some(iss) = iss {
                claims["iss"] = iss.into();
            }
            hs256("k", claims)
        };
        let v = Verifier::new(&AuthSettings {
            issuer: Some("https://id.test".into()),
            ..settings("k")
        })
        .unwrap();
        assert!(v.verify(&token(Some("https://id.test"))).is_ok());
        assert!(v.verify(&token(Some("https://evil.test"))).is_err());
        assert!(v.verify(&token(None)).is_err(), "iss is then required");
        let unset = Verifier::new(&settings("k")).unwrap();
        assert!(unset.verify(&token(Some("https://anyone.test"))).is_ok());
        assert!(unset.verify(&token(None)).is_ok());
    }

    #[test]
    fn aud_is_checked_when_an_audience_is_configured_and_ignored_otherwise() {
        let token = |aud: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": later()});
            if !aud.is_null() {
                claims["aud"] = aud;
            }
            hs256("k", claims)
        };
        use serde_json::json;
        let v = Verifier::new(&AuthSettings {
            audience: Some("warren".into()),
            ..settings("k")
        })
        .unwrap();
        assert!(v.verify(&token(json!("warren"))).is_ok());
        assert!(v.verify(&token(json!(["billing", "warren"]))).is_ok());
        assert!(v.verify(&token(json!("billing"))).is_err());
        assert!(v.verify(&token(json!(["billing"]))).is_err());
        assert!(v.verify(&token(json!([]))).is_err());
        assert!(
            v.verify(&token(json!(null))).is_err(),
            "aud is then required"
        );
        // Unset: a token that carries an aud is not refused for it (it was, whatever it said).
        let unset = Verifier::new(&settings("k")).unwrap();
        assert!(unset.verify(&token(json!("warren"))).is_ok());
        assert!(unset.verify(&token(json!(["a", "b"]))).is_ok());
        assert!(Verifier::new(&AuthSettings {
            audience: Some(String::new()),
            ..settings("k")
        })
        .is_err());
    }

    #[test]
    fn a_token_valid_for_longer_than_the_maximum_is_refused() {
        let v = Verifier::new(&AuthSettings {
            max_lifetime_s: 3600,
            ..settings("k")
        })
        .unwrap();
        let token = |iat: Option<u64>, exp: u64| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": exp});
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            hs256("k", claims)
        };
        let t = now();
        assert!(v.verify(&token(Some(t), t + 3600)).is_ok());
        assert!(v.verify(&token(None, t + 3600)).is_ok());
        assert!(v.verify(&token(Some(t - 1800), t + 1800)).is_ok());
        assert!(v.verify(&token(Some(t), t + 3601)).is_err(), "exp - iat");
        assert!(
            v.verify(&token(Some(t - 7000), t + 60)).is_err(),
            "issued for 2 h, 1 min left"
        );
        assert!(v.verify(&token(None, t + 7200)).is_err(), "exp - now");
        // An iat written late to look short-lived: exp - now still bounds it.
        assert!(v.verify(&token(Some(t + 7000), t + 7200)).is_err());
        assert!(Verifier::new(&AuthSettings {
            max_lifetime_s: 0,
            ..settings("k")
        })
        .is_err());
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
