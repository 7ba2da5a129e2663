//! Security: browser origins, forged and confused tokens, expiry while connected,
//! identity only from `sub`, ids that would break a routing key, secrets in logs.

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::time::Instant;
use warren_tests::hostile_support::{
    assert_connects_as, assert_still_serves, assert_unauthorized, metrics, rsa_keypair, sample,
    sign_with, test_logs_dir,
};
use warren_tests::token::{alg_none_from, sign_hs256};
use warren_tests::{Claims, Connect, Stack, StackOptions};

use crate::support::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_outside_the_allow_list_are_refused() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let token = stack.token("victim");
    for origin in [
        "https://evil.example",
        "null",
        "http://allowed.test.evil.example",
        "http://allowed.test:8080",
        "HTTP://ALLOWED.TEST.",
    ] {
        let answer = stack
            .handshake(0, &Connect::token(token.clone()).origin(origin))
            .await;
        assert_eq!(answer.status, 403, "{origin}: {}", answer.text());
        assert_eq!(
            answer.json().expect("JSON body")["error"],
            "forbidden_origin",
            "{origin}"
        );
    }
    let allowed = Connect::token(token).origin(warren_tests::ALLOWED_ORIGIN);
    assert_eq!(stack.handshake(0, &allowed).await.status, 101);
    assert_still_serves(&stack, 0, "after-origins").await;
}

/// Each forged token (what it is, the token) must be refused at the handshake.
async fn assert_all_unauthorized(stack: &Stack, forged: &[(&str, String)]) {
    for (what, token) in forged {
        assert_unauthorized(stack, what, token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_gateway_refuses_other_algorithms_none_and_kid_tricks() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let claims = Claims::new("alice");
    let (private, public, _) =
        rsa_keypair(&test_logs_dir(), &format!("{}-attacker", stack.prefix())).expect("openssl");
    let rsa = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let secret = EncodingKey::from_secret(stack.secret().as_bytes());

    let forged = [
        (
            "RS256 token",
            sign_with(&Header::new(Algorithm::RS256), &claims, &rsa),
        ),
        (
            "HS384 with the right secret",
            sign_with(&Header::new(Algorithm::HS384), &claims, &secret),
        ),
        (
            "HS512 with the right secret",
            sign_with(&Header::new(Algorithm::HS512), &claims, &secret),
        ),
        ("alg none", alg_none_from(&stack.token("alice"))),
        (
            "HS256 with the public key as secret",
            sign_with(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&public),
            ),
        ),
    ];
    assert_all_unauthorized(&stack, &forged).await;
    // `kid` naming a file: a server that loaded the key from it would verify an
    // empty-key or public-key signature. The key comes from configuration only.
    for kid in [
        "/dev/null",
        "../../../../../../dev/null",
        "/proc/self/environ",
        "0 OR 1=1",
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        assert_unauthorized(
            &stack,
            &format!("kid {kid} signed with an empty key"),
            &sign_with(&header, &claims, &EncodingKey::from_secret(b"")),
        )
        .await;
        // The same header on an honestly signed token changes nothing: kid is ignored.
        assert_connects_as(
            &stack,
            &format!("kid {kid}"),
            &sign_with(&header, &claims, &secret),
            "alice",
        )
        .await;
    }
    let mut jwk = Header::new(Algorithm::HS256);
    jwk.jku = Some("http://127.0.0.1:1/keys.json".into());
    assert_unauthorized(
        &stack,
        "jku to a foreign key set",
        &sign_with(&jwk, &claims, &EncodingKey::from_secret(b"attacker")),
    )
    .await;
    assert_still_serves(&stack, 0, "after-hs256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_gateway_refuses_hs256_even_when_signed_with_its_public_key() {
    let dir = test_logs_dir();
    let tag = format!("rs256-{:08x}", rand::random::<u32>());
    let (private, public, public_file) = rsa_keypair(&dir, &tag).expect("openssl");
    let (attacker, _, attacker_public_file) =
        rsa_keypair(&dir, &format!("{tag}-attacker")).expect("openssl");
    let stack = Stack::start(
        StackOptions::new(1, 1)
            .env("WARREN__AUTH__ALGORITHM", "RS256")
            .env(
                "WARREN__AUTH__PUBLIC_KEY_FILE",
                &public_file.display().to_string(),
            ),
    )
    .await;
    let claims = Claims::new("alice");
    let good = EncodingKey::from_rsa_pem(&private).expect("RSA key");
    let evil = EncodingKey::from_rsa_pem(&attacker).expect("RSA key");
    let rs256 = Header::new(Algorithm::RS256);

    // Honestly signed tokens connect, with a `kid` naming a file or without one.
    let mut odd_kid = rs256.clone();
    odd_kid.kid = Some("../../../../dev/null".into());
    for (what, header) in [
        ("RS256 signed with the configured key", &rs256),
        ("kid on an honest token is ignored", &odd_kid),
    ] {
        assert_connects_as(&stack, what, &sign_with(header, &claims, &good), "alice").await;
    }
    let mut embedded = rs256.clone();
    embedded.jwk = Some(Jwk::from_encoding_key(&evil, Algorithm::RS256).expect("jwk"));
    let mut kid = rs256.clone();
    kid.kid = Some(attacker_public_file.display().to_string());
    let forged = [
        ("HS256 with the stack's secret", stack.token("alice")),
        (
            "HS256 with the public key PEM as secret",
            sign_with(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&public),
            ),
        ),
        (
            "alg none",
            alg_none_from(&sign_with(&rs256, &claims, &good)),
        ),
        (
            "RS256 signed with another key",
            sign_with(&rs256, &claims, &evil),
        ),
        (
            "RS256 carrying its own jwk",
            sign_with(&embedded, &claims, &evil),
        ),
        (
            "kid naming the attacker's key file",
            sign_with(&kid, &claims, &evil),
        ),
    ];
    assert_all_unauthorized(&stack, &forged).await;

    let mut c = stack
        .connect_with(
            0,
            &Connect::token(sign_with(&rs256, &Claims::new("checker"), &good)),
            "checker",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.join("rs-room").await;
    c.send_acked("rs-room", "signed by the right key").await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_closes_with_4401() {
    let stack = Stack::start(StackOptions::new(1, 1).env("WARREN__AUTH__LEEWAY_S", "0")).await;
    let claims = Claims::new("brief").expires_in(3);
    let token = stack.token_with(&claims);
    let mut brief = stack
        .connect_with(0, &Connect::token(token.clone()), "brief")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lasting = stack.connect(0, "lasting").await;
    let started = Instant::now();
    assert_eq!(brief.closed_with(Duration::from_secs(10)).await, Some(4401));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(6),
        "closed after {after:?}"
    );
    // The gateway closes at the start of the `exp` second, and from then on the
    // handshake refuses the token too (RFC 7519: not on or after `exp`).
    while warren_tests::token::now_s() < claims.exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_unauthorized(&stack, "the expired token again", &token).await;
    assert_eq!(lasting.ping("unaffected").await["type"], "pong");
    lasting.close().await;
    assert_still_serves(&stack, 0, "after-expiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_sub_only_and_bad_subs_are_refused() {
    const ROOM: &str = "who";
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut bob = stack.connect(0, "bob").await;
    bob.join(ROOM).await;

    // A token for alice whose other fields all say "bob".
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("bob".into());
    let claims = Claims::new("alice").name("bob").roles(&["member"]);
    let token = sign_with(
        &header,
        &claims,
        &EncodingKey::from_secret(stack.secret().as_bytes()),
    );
    let mut alice = stack
        .connect_with(0, &Connect::token(token), "alice-as-bob")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alice.welcome.user.id, "alice");
    alice.join(ROOM).await;
    alice
        .send_frame(json!({"type": "send", "room": ROOM, "text": "I am bob", "ref": "s1",
            "user": "bob", "sub": "bob", "from": {"id": "bob"}, "actor": {"id": "bob", "roles": ["admin"]}}))
        .await;
    let ack = alice.answer("s1").await;
    let id = ack["id"]
        .as_str()
        .unwrap_or_else(|| panic!("send answered {ack}"))
        .to_owned();
    let seen = bob
        .recv_until(warren_tests::is_message_with_id(&id), WAIT)
        .await;
    assert_eq!(seen["from"]["id"], "alice", "{seen}");
    // Claiming bob's identity buys none of bob's rights either: a moderation as "bob".
    alice
        .send_frame(json!({"type": "moderate", "room": ROOM, "action": "kick", "user": "bob", "ref": "k1", "actor": {"id": "bob"}}))
        .await;
    let kick = alice.answer("k1").await;
    assert_eq!(kick["type"], "error", "{kick}");

    for sub in ["bob.x", "*", "#", "bob:x", "", "room.#", "b o b"] {
        assert_unauthorized(
            &stack,
            &format!("sub {sub:?}"),
            &stack.token_with(&Claims::new(sub)),
        )
        .await;
    }
    let no_sub = sign_with(
        &Header::new(Algorithm::HS256),
        &json!({"exp": warren_tests::token::now_s() + 600, "user": "bob"}),
        &EncodingKey::from_secret(stack.secret().as_bytes()),
    );
    assert_unauthorized(&stack, "no sub", &no_sub).await;
    alice.close().await;
    bob.close().await;
    assert_still_serves(&stack, 0, "after-identity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_would_break_a_routing_key_are_bad_requests_and_reach_nothing() {
    let stack = Stack::start(StackOptions::new(1, 1)).await;
    let mut c = stack.connect(0, "injector").await;
    let bad_rooms = [
        "evil.room",
        "evil*",
        "evil#",
        "#",
        "evil:x",
        "room.#",
        "EVIL",
        "dm:evil.a:evil",
        "dm:zz:evil",
        "evil room",
        "évil",
    ];
    let mut frames: Vec<Value> = Vec::new();
    for room in bad_rooms {
        for ty in ["join", "leave", "history", "presence", "typing"] {
            frames.push(json!({"type": ty, "room": room}));
        }
        frames.push(json!({"type": "send", "room": room, "text": "x"}));
        frames.push(json!({"type": "moderate", "room": room, "action": "kick", "user": "bob"}));
    }
    for user in ["evil.user", "evil*", "evil#", "evil:x", "#", "evil user"] {
        frames.push(json!({"type": "dm", "to": user, "text": "x"}));
        frames.push(json!({"type": "moderate", "room": "fine", "action": "ban", "user": user}));
    }
    for (n, mut frame) in frames.into_iter().enumerate() {
        let reference = format!("bad-{n}");
        frame["ref"] = json!(reference);
        c.send_frame(frame.clone()).await;
        let answer = c.answer(&reference).await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{frame} answered {answer}"
        );
    }
    // Nothing of them reached the broker or Redis.
    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_commands_total{code=\"accepted\"}"),
        0.0,
        "no command was published"
    );
    let bindings = stack.broker_bindings(0).await;
    // Only the gateway's own key: a session costs no binding.
    assert_eq!(
        bindings,
        vec![proto::amqp::gateway_key(stack.gateway_id(0))],
        "{bindings:?}"
    );
    let keys = stack.redis_keys().await;
    assert!(
        keys.iter().all(|k| !k.to_lowercase().contains("evil")),
        "{keys:?}"
    );
    c.close().await;
    assert_still_serves(&stack, 0, "after-injection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_reaches_the_logs_or_metrics() {
    let stack = Stack::start(StackOptions::new(1, 1).env("WARREN__LOG__LEVEL", "trace")).await;
    let mut tokens = Vec::new();
    for via in [
        warren_tests::TokenVia::Header,
        warren_tests::TokenVia::Query,
        warren_tests::TokenVia::Cookie,
    ] {
        let token = stack.token(&format!("logged-{via:?}").to_lowercase());
        let mut c = stack
            .connect_with(0, &Connect::token(token.clone()).via(via), "logged")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.join("audit").await;
        c.send_acked("audit", "hello").await;
        c.close().await;
        tokens.push(token);
    }
    let refused = [
        sign_hs256("not-the-secret", &Claims::new("mallory")),
        stack.token_with(&Claims::new("mallory").expired_since(3600)),
        alg_none_from(&stack.token("mallory")),
    ];
    for token in &refused {
        for via in [
            warren_tests::TokenVia::Header,
            warren_tests::TokenVia::Query,
        ] {
            let answer = stack
                .handshake(0, &Connect::token(token.clone()).via(via))
                .await;
            assert_eq!(answer.status, 401);
        }
    }
    tokens.extend(refused);
    let gw_metrics = stack.ops_get(0, "/metrics").await.text();
    let d_metrics = stack.dispatcher_get(0, "/metrics").await.text();
    let mut haystacks = vec![
        ("gateway /metrics".to_owned(), gw_metrics),
        ("dispatcher /metrics".to_owned(), d_metrics),
    ];
    for log in stack.logs() {
        let text =
            std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        haystacks.push((log.display().to_string(), text));
    }
    let mut needles = vec![("the secret".to_owned(), stack.secret().to_owned())];
    for t in &tokens {
        needles.push(("a token".to_owned(), t.clone()));
        if let Some(signature) = t.split('.').nth(2).filter(|s| s.len() >= 16) {
            needles.push(("a token signature".to_owned(), signature.to_owned()));
        }
    }
    for (where_, text) in &haystacks {
        for (what, needle) in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} appears in {where_}"
            );
        }
    }
    assert_still_serves(&stack, 0, "after-audit").await;
}
