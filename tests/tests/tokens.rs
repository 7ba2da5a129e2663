//! Token rules against real gateway processes: `nbf`, the `exp`
//! second, `iss` and `aud`, the maximum lifetime, HS256 secrets rotated by `kid`, and an
//! identity provider's public keys from a JWKS file. Each test failed on the code before
//! the change. The algorithm-confusion and `kid`-injection attacks are in hostile.rs.
//!
//! Run `cargo build --workspace --bins` first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use warren_tests::hostile_support::{
    assert_connects_as, assert_unauthorized, rsa_keypair, test_logs_dir,
};
use warren_tests::token::{ed25519_private_pem, now_s, sign_hs256, sign_kid, write_jwks};
use warren_tests::{Claims, Connect, Stack, StackOptions};

const EXIT_WAIT: Duration = Duration::from_secs(15);

/// Every token here is alice's.
async fn assert_accepted(stack: &Stack, what: &str, token: &str) {
    assert_connects_as(stack, what, token, "alice").await;
}

/// What the gateway should do with a token.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Accepted,
    Refused,
}
use Verdict::{Accepted, Refused};

/// Checks each `(verdict, what, token)` in turn.
async fn assert_verdicts(stack: &Stack, cases: &[(Verdict, &str, String)]) {
    for (verdict, what, token) in cases {
        match verdict {
            Accepted => assert_accepted(stack, what, token).await,
            Refused => assert_unauthorized(stack, what, token).await,
        }
    }
}

/// A random secret, as a deployment would generate one.
fn random_secret() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_before_its_nbf() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let claims = |nbf: u64| stack.token_with(&Claims::new("alice").not_before(nbf));
    assert_unauthorized(&stack, "nbf in 2 minutes", &claims(now_s() + 120)).await;
    // The leeway (30 s by default) absorbs an issuer's clock running ahead.
    assert_accepted(&stack, "nbf within the leeway", &claims(now_s() + 10)).await;
    assert_accepted(&stack, "nbf passed", &claims(now_s() - 10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_in_its_exp_second() {
    let stack = Stack::start(StackOptions::new(1, 1).settings("auth.leeway_s=0")).await;
    // Start at the beginning of a second, so that the handshake is made in the second
    // the token expires in (the old check accepted it there, and only there).
    let into_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1020 - into_second))).await;
    let now = now_s();
    let token = stack.token_with(&Claims::new("alice").expires_at(now));
    assert_unauthorized(&stack, "exp == now", &token).await;
    assert_eq!(now_s(), now, "the handshake took under a second");
    let token = stack.token_with(&Claims::new("alice").expires_at(now_s() + 2));
    assert_accepted(&stack, "exp in 2 s", &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_and_aud_must_match_when_configured() {
    let settings = "auth.issuer=https://id.warren.test auth.audience=warren";
    let stack = Stack::start(StackOptions::new(1, 1).settings(settings)).await;
    let right = Claims::new("alice").issuer("https://id.warren.test");
    let right_aud = Claims::new("alice").audience(json!("warren"));
    let token = |claims: Claims| stack.token_with(&claims);
    assert_verdicts(
        &stack,
        &[
            (
                Accepted,
                "right iss and aud",
                token(right.clone().audience(json!("warren"))),
            ),
            (
                Accepted,
                "aud an array that holds ours",
                token(right.clone().audience(json!(["billing", "warren"]))),
            ),
            (
                Refused,
                "another aud",
                token(right.clone().audience(json!("billing"))),
            ),
            (
                Refused,
                "an array without ours",
                token(right.clone().audience(json!(["billing"]))),
            ),
            (Refused, "no aud", token(right.clone())),
            (
                Refused,
                "another iss",
                token(right_aud.clone().issuer("https://evil.test")),
            ),
            (Refused, "no iss", token(right_aud)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud_is_not_checked_when_no_audience_is_configured() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    for aud in [
        json!("warren"),
        json!("some-other-service"),
        json!(["a", "b"]),
    ] {
        let token = stack.token_with(&Claims::new("alice").audience(aud.clone()));
        assert_accepted(&stack, &format!("aud {aud}"), &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_valid_longer_than_the_maximum_lifetime_is_refused() {
    let stack = Stack::start(StackOptions::new(1, 1).settings("auth.max_lifetime_s=3600")).await;
    let now = now_s();
    let token = |claims: Claims| stack.token_with(&claims);
    assert_verdicts(
        &stack,
        &[
            (
                Accepted,
                "an hour from iat",
                token(Claims::new("alice").issued_at(now).expires_at(now + 3600)),
            ),
            (
                Refused,
                "an hour and a second from iat",
                token(Claims::new("alice").issued_at(now).expires_at(now + 3601)),
            ),
            (
                Refused,
                "issued for a day, an hour left",
                token(
                    Claims::new("alice")
                        .issued_at(now - 82_800)
                        .expires_at(now + 3600),
                ),
            ),
            (
                Refused,
                "no iat, two hours left",
                token(Claims::new("alice").expires_at(now + 7200)),
            ),
            (
                Refused,
                "an iat written late to look short",
                token(
                    Claims::new("alice")
                        .issued_at(now + 7000)
                        .expires_at(now + 7200),
                ),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_with_overlap_by_kid() {
    let (old, new) = (random_secret(), random_secret());
    let mut stack = Stack::start(
        StackOptions::new(1, 1).env("WARREN__AUTH__SECRETS", &format!("old:{old},new:{new}")),
    )
    .await;
    let claims = Claims::new("alice");
    let hs256 = |kid: &str, secret: &str| {
        sign_kid(
            Algorithm::HS256,
            kid,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    assert_verdicts(
        &stack,
        &[
            (Accepted, "kid old", hs256("old", &old)),
            (Accepted, "kid new", hs256("new", &new)),
            (Accepted, "no kid: the default secret", stack.token("alice")),
            (
                Refused,
                "kid new signed with the old secret",
                hs256("new", &old),
            ),
            (
                Refused,
                "kid old signed with the default secret",
                hs256("old", stack.secret()),
            ),
            (
                Refused,
                "no kid signed with a kid's secret",
                sign_hs256(&new, &claims),
            ),
        ],
    )
    .await;

    // Retiring the old secret: a gateway without it refuses its tokens, keeps the new.
    let retired = stack
        .start_gateway_with(&[("WARREN__AUTH__SECRETS", &format!("new:{new}"))])
        .await;
    let status = |token: String| {
        let stack = &stack;
        async move {
            stack
                .handshake(retired, &Connect::token(token))
                .await
                .status
        }
    };
    assert_eq!(
        status(hs256("old", &old)).await,
        401,
        "kid old after retirement"
    );
    assert_eq!(
        status(hs256("new", &new)).await,
        101,
        "kid new after retirement"
    );

    // A malformed entry stops a gateway at start rather than silently dropping a key.
    let (status, log) = stack
        .gateway_refusal(&[("WARREN__AUTH__SECRETS", "no-kid-here")], EXIT_WAIT)
        .await
        .expect("a gateway with a malformed auth.secrets kept running");
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("auth.secrets"), "the log says why: {log}");
    assert!(
        !log.contains("no-kid-here"),
        "the log does not print the entry: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_providers_jwks_keys_are_accepted_and_other_keys_refused() {
    let dir = test_logs_dir();
    let tag = format!("jwks-{:08x}", rand::random::<u32>());
    let (rsa, rsa_public, _) = rsa_keypair(&dir, &tag).expect("openssl");
    let (attacker, _, _) = rsa_keypair(&dir, &format!("{tag}-attacker")).expect("openssl");
    let ed = ed25519_private_pem(&dir, &tag).expect("openssl");
    let rsa = EncodingKey::from_rsa_pem(&rsa).expect("RSA key");
    let attacker = EncodingKey::from_rsa_pem(&attacker).expect("RSA key");
    let ed = EncodingKey::from_ed_pem(&ed).expect("Ed25519 key");
    let jwks = dir.join(format!("{tag}.json"));
    write_jwks(
        &jwks,
        &[
            ("idp-rsa-1", Algorithm::RS256, &rsa),
            ("idp-ed-1", Algorithm::EdDSA, &ed),
        ],
    )
    .expect("write the JWKS");
    let stack = Stack::start(
        StackOptions::new(1, 1).env("WARREN__AUTH__JWKS_FILE", &jwks.display().to_string()),
    )
    .await;
    let claims = Claims::new("alice");
    let signed = |algorithm, kid, key: &EncodingKey| sign_kid(algorithm, kid, &claims, key);
    let public_pem = EncodingKey::from_secret(&rsa_public);
    let no_kid = jsonwebtoken::Header::new(Algorithm::RS256);

    // Signed with (algorithm, kid, key): the provider's own keys pass; another key under
    // its kid, a kid of the other algorithm's key, or its public key as an HMAC secret do
    // not.
    let by_kid = [
        (
            Accepted,
            "RS256 by kid",
            Algorithm::RS256,
            "idp-rsa-1",
            &rsa,
        ),
        (Accepted, "EdDSA by kid", Algorithm::EdDSA, "idp-ed-1", &ed),
        (
            Refused,
            "another RSA key, the provider's kid",
            Algorithm::RS256,
            "idp-rsa-1",
            &attacker,
        ),
        (
            Refused,
            "RS256 under the Ed25519 kid",
            Algorithm::RS256,
            "idp-ed-1",
            &rsa,
        ),
        (
            Refused,
            "HS256 keyed with the public PEM",
            Algorithm::HS256,
            "idp-rsa-1",
            &public_pem,
        ),
    ];
    let mut cases: Vec<(Verdict, &str, String)> = by_kid
        .into_iter()
        .map(|(verdict, what, algorithm, kid, key)| (verdict, what, signed(algorithm, kid, key)))
        .collect();
    let no_kid = warren_tests::hostile_support::sign_with(&no_kid, &claims, &rsa);
    cases.push((Refused, "the provider's key without a kid", no_kid));
    assert_verdicts(&stack, &cases).await;
    std::fs::remove_file(&jwks).ok();
}
