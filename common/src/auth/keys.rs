//! The keys tokens are checked with, each pinned to one algorithm by configuration: the
//! default key (`auth.secret` or `auth.public_key_file`) for tokens without a `kid`, and
//! the key set (`auth.secrets`, `auth.jwks_file`) a token's `kid` selects from. A token
//! only ever picks among these keys, and never the algorithm: that comes with the key.

use std::collections::HashMap;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::AuthError;
use crate::settings::AuthSettings;

/// A key, with the validation that admits its algorithm alone.
pub(super) struct Key {
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

pub(super) struct Keys {
    default: Option<Key>,
    by_kid: HashMap<String, Key>,
}

impl Keys {
    /// Reads every configured key; `rules` is the validation each key's copy starts from.
    pub(super) fn load(settings: &AuthSettings, rules: &Validation) -> Result<Keys, AuthError> {
        let pinned = |key: DecodingKey, alg: Algorithm| {
            let mut validation = rules.clone();
            validation.algorithms = vec![alg];
            Key { key, validation }
        };
        let mut keys = Keys {
            default: default_key(settings)?.map(|(key, alg)| pinned(key, alg)),
            by_kid: HashMap::new(),
        };
        // An empty entry is what `WARREN__AUTH__SECRETS=` (set, but to nothing) gives.
        for entry in settings.secrets.iter().filter(|e| !e.expose().is_empty()) {
            let (kid, secret) = entry
                .expose()
                .split_once(':')
                .filter(|(kid, secret)| !kid.is_empty() && !secret.is_empty())
                .ok_or_else(|| {
                    AuthError::Config("auth.secrets entries are kid:secret, both non-empty".into())
                })?;
            keys.insert(
                kid,
                pinned(
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                ),
            )?;
        }
        if let Some(path) = settings.jwks_file.as_deref() {
            let mut usable = 0;
            for (kid, key, alg) in jwks(path)? {
                keys.insert(&kid, pinned(key, alg))?;
                usable += 1;
            }
            if usable == 0 {
                return Err(AuthError::Config(format!(
                    "{path}: no key with a kid and HS256, RS256, ES256 or EdDSA"
                )));
            }
        }
        if keys.default.is_none() && keys.by_kid.is_empty() {
            return Err(AuthError::Config(
                "no key: set auth.secret (HS256) or auth.public_key_file, auth.secrets or \
                 auth.jwks_file"
                    .into(),
            ));
        }
        Ok(keys)
    }

    /// The key a token names by `kid`. A `kid` that names no key of the set is treated
    /// like no `kid` at all (the default key), as it was before key sets: issuers that
    /// always write a `kid` keep working with a single key, and the choice stays within
    /// configured keys either way.
    pub(super) fn select(&self, kid: Option<&str>) -> Option<&Key> {
        kid.and_then(|kid| self.by_kid.get(kid))
            .or(self.default.as_ref())
    }

    fn insert(&mut self, kid: &str, key: Key) -> Result<(), AuthError> {
        if self.by_kid.insert(kid.to_owned(), key).is_some() {
            return Err(AuthError::Config(format!(
                "kid {kid:?} is configured twice (auth.secrets, auth.jwks_file)"
            )));
        }
        Ok(())
    }
}

/// The algorithm of `auth.algorithm`.
fn algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthError::Config(format!(
            "auth.algorithm {other:?} is not HS256, RS256, ES256 or EdDSA"
        ))),
    }
}

/// `auth.secret` for HS256, else the PEM of `auth.public_key_file`; `None` when unset.
fn default_key(settings: &AuthSettings) -> Result<Option<(DecodingKey, Algorithm)>, AuthError> {
    let alg = algorithm(&settings.algorithm)?;
    if alg == Algorithm::HS256 {
        let secret = settings.secret.expose();
        return Ok((!secret.is_empty()).then(|| (DecodingKey::from_secret(secret.as_bytes()), alg)));
    }
    let Some(path) = settings.public_key_file.as_deref() else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| AuthError::Config(format!("reading {path}: {e}")))?;
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        _ => DecodingKey::from_ed_pem(&pem),
    };
    let key = key.map_err(|e| AuthError::Config(format!("public key {path}: {e}")))?;
    Ok(Some((key, alg)))
}

/// The usable keys of a JWKS file. Keys Warren cannot use (no `kid`, meant for
/// encryption, another algorithm or curve) are skipped with a warning rather than
/// refused: an identity provider's set often holds some.
fn jwks(path: &str) -> Result<Vec<(String, DecodingKey, Algorithm)>, AuthError> {
    let json =
        std::fs::read(path).map_err(|e| AuthError::Config(format!("reading {path}: {e}")))?;
    let set: JwkSet = serde_json::from_slice(&json)
        .map_err(|e| AuthError::Config(format!("{path} is not a JSON Web Key Set: {e}")))?;
    let mut usable = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::warn!(
                file = path,
                "JWKS key without a kid skipped: tokens select keys by kid"
            );
            continue;
        };
        match jwk_algorithm(jwk) {
            Ok(alg) => {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| AuthError::Config(format!("{path}: key {kid:?}: {e}")))?;
                usable.push((kid, key, alg));
            }
            Err(why) => tracing::warn!(file = path, kid, "JWKS key skipped: {why}"),
        }
    }
    Ok(usable)
}

/// The one algorithm a JWK verifies: from its type and curve, which its `alg` (when
/// present) must agree with. RSA is RS256 only, so a PS256 or RS384 key is skipped.
fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("meant for encryption (use: enc)".into());
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return Err("key type or curve not supported (oct, RSA, P-256, Ed25519)".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(alg),
        Some(named) if named == KeyAlgorithm::from(alg) => Ok(alg),
        Some(named) => Err(format!("alg {named:?} on a key that verifies {alg:?} only")),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::super::tests::{now, settings};
    use super::*;
    use crate::auth::Verifier;
    use crate::settings::{AuthSettings, Secret};

    /// Test keys (made with `openssl genpkey`), never used anywhere else.
    const ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIK6I59E644AfiGExsY+Zpi4ePlviM91k8WvGUiesOIxO
-----END PRIVATE KEY-----";
    const OTHER_ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDIWm/shWOSBiWVIGyCifUbM7/1NZSypydLLi2xC97jF
-----END PRIVATE KEY-----";
    const P256: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdu1hLNW9vXWlBHMT
7jBzdJQYyB2u5jalgrsRJr8/O5GhRANCAASBY0Lggtj3KIW29WG0ZNhiR9cg56CY
azYFfx6JWvd1i5EcgQ5Ue3AfJuCuG4wwzvEb6Wp2jFlsop3OSJmk/Fiq
-----END PRIVATE KEY-----";

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let claims = json!({"sub": "alice", "exp": now() + 600});
        encode(&header, &claims, key).unwrap()
    }

    fn secret(s: &str) -> EncodingKey {
        EncodingKey::from_secret(s.as_bytes())
    }

    /// Whether `v` accepts a token signed HS256 with the secret `key`, under `kid`.
    fn accepts_hs256(v: &Verifier, kid: Option<&str>, key: &str) -> bool {
        v.verify(&sign(Algorithm::HS256, kid, &secret(key))).is_ok()
    }

    fn with_secrets(default: &str, entries: &[&str]) -> AuthSettings {
        AuthSettings {
            secrets: entries.iter().map(|e| Secret::new(*e)).collect(),
            ..settings(default)
        }
    }

    /// A JWKS file of these keys, each the public half of a private PEM key.
    fn jwks_file(name: &str, keys: &[(Option<&str>, Algorithm, &EncodingKey)]) -> String {
        let keys: Vec<Jwk> = keys
            .iter()
            .map(|(kid, alg, key)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
                jwk.common.key_id = kid.map(str::to_owned);
                jwk
            })
            .collect();
        let path = std::env::temp_dir().join(format!("warren-{name}-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
        path.display().to_string()
    }

    #[test]
    fn rotated_secrets_are_picked_by_kid_and_the_default_serves_tokens_without_one() {
        let v = Verifier::new(&with_secrets("legacy", &["old:s1", "new:s2:with-colon"])).unwrap();
        assert!(accepts_hs256(&v, Some("old"), "s1"));
        assert!(accepts_hs256(&v, Some("new"), "s2:with-colon"));
        assert!(accepts_hs256(&v, None, "legacy"));
        // A kid picks exactly one key: another configured key does not do.
        assert!(!accepts_hs256(&v, Some("new"), "s1"));
        assert!(!accepts_hs256(&v, Some("old"), "legacy"));
        assert!(!accepts_hs256(&v, None, "s1"));
        // A kid that names no key of the set means the default key, as before key sets.
        assert!(accepts_hs256(&v, Some("gone"), "legacy"));
        assert!(!accepts_hs256(&v, Some("gone"), "s1"));
    }

    #[test]
    fn without_a_default_key_every_token_needs_a_kid() {
        let v = Verifier::new(&with_secrets("", &["k1:s1"])).unwrap();
        assert!(accepts_hs256(&v, Some("k1"), "s1"));
        assert!(!accepts_hs256(&v, None, ""));
        assert!(!accepts_hs256(&v, Some("k2"), ""));
    }

    #[test]
    fn bad_key_configuration_refuses_to_start() {
        for entries in [&["nokid"][..], &[":s"], &["k:"], &["k:a", "k:b"]] {
            assert!(
                Verifier::new(&with_secrets("d", entries)).is_err(),
                "{entries:?}"
            );
        }
        assert!(
            Verifier::new(&with_secrets("d", &[""])).is_ok(),
            "set to nothing"
        );
        assert!(Verifier::new(&settings("")).is_err(), "no key at all");
        let missing = AuthSettings {
            jwks_file: Some("/nonexistent/jwks.json".into()),
            ..settings("d")
        };
        assert!(Verifier::new(&missing).is_err());
    }

    #[test]
    fn jwks_public_keys_verify_their_own_algorithm_only() {
        let ed = EncodingKey::from_ed_pem(ED25519.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(P256.as_bytes()).unwrap();
        let other = EncodingKey::from_ed_pem(OTHER_ED25519.as_bytes()).unwrap();
        let file = jwks_file(
            "jwks",
            &[
                (Some("ed"), Algorithm::EdDSA, &ed),
                (Some("ec"), Algorithm::ES256, &ec),
            ],
        );
        let v = Verifier::new(&AuthSettings {
            jwks_file: Some(file.clone()),
            ..settings("")
        })
        .unwrap();
        std::fs::remove_file(&file).ok();
        assert!(v.verify(&sign(Algorithm::EdDSA, Some("ed"), &ed)).is_ok());
        assert!(v.verify(&sign(Algorithm::ES256, Some("ec"), &ec)).is_ok());
        assert!(
            v.verify(&sign(Algorithm::EdDSA, Some("ed"), &other))
                .is_err(),
            "another key"
        );
        assert!(
            v.verify(&sign(Algorithm::EdDSA, Some("ec"), &ed)).is_err(),
            "another kid's key"
        );
        assert!(
            v.verify(&sign(Algorithm::EdDSA, None, &ed)).is_err(),
            "no kid, no default"
        );
        // The header's alg never chooses: HS256 keyed with the public key's bytes fails.
        let public = Jwk::from_encoding_key(&ed, Algorithm::EdDSA).unwrap();
        let AlgorithmParameters::OctetKeyPair(okp) = &public.algorithm else {
            panic!("an Ed25519 JWK")
        };
        let x = secret(&okp.x);
        assert!(v.verify(&sign(Algorithm::HS256, Some("ed"), &x)).is_err());
    }

    #[test]
    fn unusable_jwks_keys_are_skipped_and_a_set_of_none_is_refused() {
        let ed = EncodingKey::from_ed_pem(ED25519.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(P256.as_bytes()).unwrap();
        let mut mislabelled = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
        mislabelled.common.key_algorithm = Some(KeyAlgorithm::ES384);
        assert!(jwk_algorithm(&mislabelled).is_err());
        let mut encryption = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
        encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(jwk_algorithm(&encryption).is_err());

        let file = jwks_file("no-kid", &[(None, Algorithm::EdDSA, &ed)]);
        let none = AuthSettings {
            jwks_file: Some(file.clone()),
            ..settings("d")
        };
        assert!(Verifier::new(&none).is_err(), "a set with no usable key");
        std::fs::remove_file(&file).ok();
        let file = jwks_file(
            "some",
            &[
                (None, Algorithm::EdDSA, &ed),
                (Some("ec"), Algorithm::ES256, &ec),
            ],
        );
        let some = AuthSettings {
            jwks_file: Some(file.clone()),
            ..settings("d")
        };
        assert!(Verifier::new(&some).is_ok());
        std::fs::remove_file(&file).ok();
    }
}
