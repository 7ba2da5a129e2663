//! The browser client, served by the gateway at `/`, and the development token
//! endpoint `POST /dev/token`.
//!
//! The files under `web/` are compiled into the binary with `include_str!`, so a gateway
//! is still one file to ship and every gateway serves the same client it speaks to. The
//! page speaks through the JavaScript client library, `clients/js/warren.js` (and the
//! module it imports), served as `/warren.js` from the same binary.
//! They are sent with `Cache-Control: no-cache` (a browser revalidates after an upgrade)
//! and a Content-Security-Policy that allows nothing but this origin and WebSockets: the
//! client renders user text with `textContent` only, and the policy is the second line
//! of defence if that ever slips.
//!
//! `POST /dev/token` mints a token for any name. It answers only when
//! `gateway.dev_tokens` is on and the gateway verifies HS256 tokens (it signs with the
//! same secret); otherwise it is a 404, as if it did not exist. It also checks the
//! `Host` header: only a loopback name or the host of an allowed origin is answered,
//! so a page on another site whose name was rebound to this address (DNS rebinding)
//! cannot mint tokens through the victim's browser.

use std::sync::Arc;

use bytes::Bytes;
use common::auth::{mint_hs256, Claims};
use common::Settings;
use serde::Deserialize;
use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::state::Gateway;

/// Only this origin, plus WebSockets to any host (behind a load balancer the socket's
/// host is the page's, but a deployment may put the API on a sibling name).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How long a development token is valid.
const DEV_TOKEN_TTL_S: u64 = 12 * 3600;

/// The largest body `POST /dev/token` reads.
const DEV_TOKEN_MAX_BODY: u64 = 4096;

/// One file of the client.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// An [`Asset`] for a file under `web/` (or, with a directory first, under that
/// directory of the repository), compiled in.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        asset!($path, "web", $file, $content_type)
    };
    ($path:literal, $dir:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../", $dir, "/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/style.css", "style.css", CSS),
    asset!("/favicon.svg", "favicon.svg", SVG),
    asset!("/app.js", "app.js", JS),
    asset!("/auth.js", "auth.js", JS),
    asset!("/chat.js", "chat.js", JS),
    asset!("/state.js", "state.js", JS),
    asset!("/ui.js", "ui.js", JS),
    asset!("/warren.js", "clients/js", "warren.js", JS),
    asset!("/warren-order.js", "clients/js", "warren-order.js", JS),
];

/// The web client's routes: the assets (GET) and `POST /dev/token`.
pub fn routes(gw: Arc<Gateway>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let dev_tokens = gw.settings.dev_tokens_enabled();
    if dev_tokens {
        tracing::warn!("POST /dev/token is on: anyone can sign in as anyone (development only)");
    }
    // The path is matched before the method, so a POST to an unknown path stays a 404
    // rather than becoming a 405 when warp picks among the rejections.
    let assets = warp::path::full()
        .and_then(|path: FullPath| {
            std::future::ready(asset(path.as_str()).ok_or_else(warp::reject::not_found))
        })
        .and(warp::get())
        .map(|asset: &'static Asset| asset_response(asset));
    let settings = gw.settings.clone();
    let dev_token = warp::path!("dev" / "token")
        .and(warp::post())
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(DEV_TOKEN_MAX_BODY))
        .and(warp::body::bytes())
        .map(
            move |host: Option<String>, content_type: Option<String>, body: Bytes| {
                if !dev_tokens {
                    failure(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
                } else if !host_allowed(host.as_deref(), &settings.gateway.allowed_origins) {
                    failure(
                        StatusCode::FORBIDDEN,
                        "forbidden_host",
                        "development tokens are minted only for a loopback or allowed host",
                    )
                } else {
                    mint_dev_token(&settings, content_type.as_deref(), &body)
                }
            },
        );
    assets.or(dev_token).unify()
}

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn asset_response(asset: &Asset) -> Response {
    let mut response = Response::new(asset.body.into());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(asset.content_type));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Whether a development endpoint may answer a request for `host` (the `Host` header):
/// a loopback name or address (any port), or exactly the host and port of one of the
/// allowed browser origins. Anything else, or no `Host`, is refused (DNS rebinding).
fn host_allowed(host: Option<&str>, allowed_origins: &[String]) -> bool {
    let Some(host) = host.map(|h| h.trim().to_ascii_lowercase()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name),
    };
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || allowed_origins.iter().any(|origin| {
            let authority = origin.split_once("://").map_or(origin.as_str(), |(_, a)| a);
            authority.trim_end_matches('/').eq_ignore_ascii_case(&host)
        })
}

#[derive(Deserialize)]
struct DevTokenRequest {
    name: String,
}

/// Why `POST /dev/token` refused: the status and the `{error, message}` body.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    error: &'static str,
    message: &'static str,
}

impl Failure {
    fn into_response(self) -> Response {
        failure(self.status, self.error, self.message)
    }
}

/// Answers `POST /dev/token`: 200 with the token, or the failure as JSON.
fn mint_dev_token(settings: &Settings, content_type: Option<&str>, body: &[u8]) -> Response {
    match dev_token(settings, content_type, body) {
        Ok(answer) => {
            let mut response = warp::reply::json(&answer).into_response();
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            response
        }
        Err(refused) => refused.into_response(),
    }
}

/// Mints a token for the name in the body (JSON `{"name"}` or a form field `name`):
/// `{"token", "user": {"id", "name"}}`.
fn dev_token(
    settings: &Settings,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value, Failure> {
    let is_form = content_type.is_some_and(|ct| {
        ct.trim_start()
            .starts_with("application/x-www-form-urlencoded")
    });
    let name = if is_form {
        std::str::from_utf8(body)
            .ok()
            .and_then(|form| form_field(form, "name"))
    } else {
        serde_json::from_slice::<DevTokenRequest>(body)
            .ok()
            .map(|r| r.name)
    };
    let name = name.as_deref().and_then(display_name).ok_or(Failure {
        status: StatusCode::BAD_REQUEST,
        error: "bad_request",
        message: "expected a name: JSON {\"name\": \"...\"} or a form field name",
    })?;
    let claims = Claims {
        sub: user_id_for(&name),
        exp: common::now_ms() / 1000 + DEV_TOKEN_TTL_S,
        name: Some(name),
        roles: Vec::new(),
    };
    let token = mint_hs256(settings.auth.secret.expose(), &claims).map_err(|e| {
        tracing::error!(error = %e, "minting a development token");
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal",
            message: "could not mint a token",
        }
    })?;
    Ok(json!({
        "token": token,
        "user": { "id": claims.sub, "name": claims.name },
    }))
}

fn failure(status: StatusCode, error: &str, message: &str) -> Response {
    let body = warp::reply::json(&json!({ "error": error, "message": message }));
    warp::reply::with_status(body, status).into_response()
}

/// The name as it will be shown: trimmed, control characters removed, at most 64
/// characters; None when nothing is left.
fn display_name(raw: &str) -> Option<String> {
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(proto::ids::MAX_ID_LEN)
        .collect();
    let name = name.trim_end().to_owned();
    (!name.is_empty()).then_some(name)
}

/// A user id (`[A-Za-z0-9_-]{1,64}`) derived from a display name: lowercased, every
/// other character a `-` (runs collapsed, none at either end). A name with no usable
/// character at all ("李雷") gets `u-` and a hash of the name, so it is still stable.
fn user_id_for(name: &str) -> String {
    let mut id = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if !(c == '-' && (id.is_empty() || id.ends_with('-'))) {
            id.push(c);
        }
    }
    id.truncate(proto::ids::MAX_ID_LEN);
    let id = id.trim_end_matches('-');
    if id.is_empty() {
        format!("u-{:08x}", proto::ids::fnv1a_32(name.as_bytes()))
    } else {
        id.to_owned()
    }
}

/// The value of `key` in an `application/x-www-form-urlencoded` body.
fn form_field(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k)? == key {
            percent_decode(v)
        } else {
            None
        }
    })
}

/// Decodes `+` and `%XX`; None on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::auth::Verifier;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load_from(None, Some(env)).unwrap()
    }

    #[test]
    fn user_ids_are_derived_from_names() {
        assert_eq!(user_id_for("Alice"), "alice");
        assert_eq!(user_id_for("Ann  Lee!"), "ann-lee");
        assert_eq!(user_id_for("--x_y--"), "x_y");
        assert_eq!(user_id_for(&"a".repeat(80)).len(), 64);
        let hashed = user_id_for("李雷");
        assert!(hashed.starts_with("u-"));
        assert_eq!(hashed, user_id_for("李雷"));
        for name in ["Alice", "Ann  Lee!", "李雷", "Zoë", "a.b*c#d", "-"] {
            assert!(
                proto::ids::validate_user(&user_id_for(name)).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("  Bob \n"), Some("Bob".to_owned()));
        assert_eq!(display_name("a\u{7}b"), Some("ab".to_owned()));
        assert_eq!(display_name("   "), None);
        assert_eq!(display_name(&"é".repeat(100)).unwrap().chars().count(), 64);
    }

    #[test]
    fn form_bodies_are_decoded() {
        assert_eq!(
            form_field("x=1&name=Ann+Lee%21", "name"),
            Some("Ann Lee!".to_owned())
        );
        assert_eq!(form_field("name=%E6%9D%8E", "name"), Some("李".to_owned()));
        assert_eq!(form_field("name=%zz", "name"), None);
        assert_eq!(form_field("other=1", "name"), None);
    }

    #[test]
    fn a_minted_token_verifies_with_the_gateway_secret() {
        let s = settings(&[
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ("WARREN__AUTH__SECRET", "web-test-secret"),
        ]);
        assert!(s.dev_tokens_enabled());
        for (content_type, body) in [
            (Some("application/json"), &br#"{"name":"Ann Lee"}"#[..]),
            (None, &br#"{"name":"Ann Lee"}"#[..]),
            (
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                &b"name=Ann+Lee"[..],
            ),
        ] {
            let answer = dev_token(&s, content_type, body).unwrap();
            assert_eq!(answer["user"]["id"], "ann-lee");
            assert_eq!(answer["user"]["name"], "Ann Lee");
            let claims = Verifier::new(&s.auth)
                .unwrap()
                .verify(answer["token"].as_str().unwrap())
                .unwrap();
            assert_eq!(claims.sub, "ann-lee");
            assert_eq!(claims.name.as_deref(), Some("Ann Lee"));
            assert!(claims.roles.is_empty());
            let ttl = claims.exp - common::now_ms() / 1000;
            assert!((DEV_TOKEN_TTL_S - 60..=DEV_TOKEN_TTL_S).contains(&ttl));
        }
    }

    #[test]
    fn a_request_without_a_name_is_refused() {
        let s = settings(&[("WARREN__GATEWAY__DEV_TOKENS", "true")]);
        for body in [&b"{}"[..], b"{\"name\":\"  \"}", b"not json"] {
            let refused = dev_token(&s, Some("application/json"), body).unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn dev_tokens_need_the_setting_and_hs256() {
        assert!(!settings(&[]).dev_tokens_enabled());
        assert!(!settings(&[
            ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ("WARREN__AUTH__ALGORITHM", "RS256"),
        ])
        .dev_tokens_enabled());
    }

    #[test]
    fn dev_tokens_answer_only_loopback_or_allowed_hosts() {
        let origins = vec![
            "https://chat.example".to_owned(),
            "http://demo.test:8080".to_owned(),
        ];
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:8081",
            "[::1]:8080",
            "chat.example",
            "demo.test:8080",
        ] {
            assert!(host_allowed(Some(ok), &origins), "{ok}");
        }
        for refused in [
            "attacker.example:8080",
            "127.0.0.1.attacker.example",
            "demo.test:9999",
            "chat.example.evil",
            "",
        ] {
            assert!(!host_allowed(Some(refused), &origins), "{refused}");
        }
        assert!(!host_allowed(None, &origins));
    }

    #[test]
    fn assets_carry_their_type_and_the_security_headers() {
        for (path, content_type) in [
            ("/", HTML),
            ("/app.js", JS),
            ("/warren.js", JS),
            ("/style.css", CSS),
            ("/favicon.svg", SVG),
        ] {
            let response = asset_response(asset(path).unwrap());
            let headers = response.headers();
            assert_eq!(headers["content-type"], content_type);
            assert_eq!(headers["cache-control"], "no-cache");
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        }
        assert!(asset("/nope.js").is_none());
        assert!(asset("/../Cargo.toml").is_none());
    }

    /// Every module the page imports is served, so a new file cannot be forgotten here.
    #[test]
    fn every_imported_module_is_served() {
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit_once("from ")
                    .map(|(_, t)| t.trim_matches(|c| c == '\'' || c == '"' || c == ';'))
                    .unwrap();
                let path = target.trim_start_matches('.');
                assert!(asset(path).is_some(), "{} imports {target}", a.path);
            }
        }
        let index = asset("/").unwrap().body;
        assert!(index.contains("src=\"/app.js\""));
        // The page's connection is the client library's.
        assert!(asset("/chat.js")
            .unwrap()
            .body
            .contains("import { WarrenClient } from './warren.js';"));
    }
}
