//! Typed settings, layered: built-in development defaults, then an optional file
//! (`--config FILE`, TOML), then environment overrides `WARREN__SECTION__KEY`
//! (lists comma-separated). Every service reads the same [`Settings`], so one file can
//! configure a whole deployment.

use std::fmt;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// The defaults: a development setup against RabbitMQ and Redis on 127.0.0.1.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// The development JWT secret; a service that runs with it logs a warning.
pub const DEV_SECRET: &str = "warren-dev-secret-insecure";

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct SettingsError(#[from] config::ConfigError);

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub gateway: GatewaySettings,
    pub dispatcher: DispatcherSettings,
    pub rooms: RoomsSettings,
    pub presence: PresenceSettings,
    pub log: LogSettings,
    pub trace: TraceSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    pub url: Secret,
    /// The nodes of a RabbitMQ cluster, tried in turn: a service connects to the first
    /// that answers and moves on to the next when it goes away. Empty: `url` alone.
    pub urls: Vec<Secret>,
    /// `classic` or `quorum`: the type of the command queues (a queue keeps the type it
    /// was declared with; changing it means deleting the queues, see OPERATIONS.md).
    pub command_queue_type: QueueType,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// Number of command shards; must agree across gateways, dispatchers and bots.
    pub shards: u32,
    /// Unacknowledged deliveries a consumer may hold.
    pub prefetch: u16,
    /// AMQP logins whose commands may speak for any `actor` (the gateways').
    pub gateway_accounts: Vec<String>,
    /// Reconnect backoff bounds, milliseconds.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

/// The type of the command queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl RoomsSettings {
    /// `idle_expiry_s` as a duration, `None` when rooms are kept for ever.
    pub fn idle_expiry(&self) -> Option<Duration> {
        (self.idle_expiry_s > 0).then(|| Duration::from_secs(self.idle_expiry_s))
    }

    /// How often a process that keeps rooms alive renews their expiry: a quarter of it,
    /// within `[1 s, at_most]`.
    pub fn touch_every(&self, at_most: Duration) -> Option<Duration> {
        self.idle_expiry()
            .map(|idle| (idle / 4).clamp(Duration::from_secs(1), at_most))
    }
}

impl AmqpSettings {
    /// The broker addresses to try, in order: `urls`, or `url` when that is empty.
    pub fn addresses(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            vec![self.url.expose()]
        } else {
            self.urls.iter().map(Secret::expose).collect()
        }
    }

    /// The AMQP login of the first address (every node of a cluster shares its users).
    pub fn login(&self) -> String {
        crate::amqp::login_of(self.addresses()[0])
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// The single Redis, used while `cluster_nodes` is empty.
    pub url: Secret,
    /// Seed URLs of a Redis Cluster (`redis://host:port`, a few of its nodes: the client
    /// learns the others from them). Non-empty: every service uses the cluster, and
    /// `url` is ignored.
    pub cluster_nodes: Vec<Secret>,
    /// Prefix of every Redis key (no braces: hash tags follow it).
    pub prefix: String,
}

/// How tokens are checked (`common::auth`). Keys come from configuration only: the
/// default key (`algorithm` with `secret` or `public_key_file`) checks tokens without a
/// `kid`; `secrets` and `jwks_file` hold keys a token picks by its `kid`, so a new key
/// can be trusted before tokens are issued with it and the old one dropped after.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `HS256`, `RS256`, `ES256` or `EdDSA`: the default key's algorithm.
    pub algorithm: String,
    /// The default key for HS256. Empty: no default key, so every token must name a key
    /// of `secrets` or `jwks_file` by its `kid`.
    pub secret: Secret,
    /// The default key for RS256, ES256 and EdDSA: a PEM public key. Absent: no default key.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// More HS256 secrets, each `kid:secret` (the `kid` ends at the first `:`).
    pub secrets: Vec<Secret>,
    /// A JSON Web Key Set (RFC 7517) whose keys tokens select by `kid`: an identity
    /// provider's RSA (RS256), P-256 (ES256) and Ed25519 (EdDSA) public keys, or `oct`
    /// HS256 secrets. Read once at start: a changed file takes effect on restart.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// When set, a token must carry this `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, a token's `aud` (a string or an array) must contain this. When unset,
    /// `aud` is not checked: set it wherever the key also signs tokens for other services.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock leeway when checking `exp` and `nbf`, seconds (at most 60).
    pub leeway_s: u64,
    /// The longest a token may be valid: `exp - iat`, and `exp` from now. Longer-lived
    /// tokens are refused, so a leaked token and a retired key stop working in bounded time.
    pub max_lifetime_s: u64,
    /// Lets a gateway whose public listener is not on loopback start with the
    /// development secret or `POST /dev/token`. Loudly named on purpose: anyone who
    /// reaches such a gateway can sign in as anyone.
    pub insecure_dev_auth_on_network: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    /// The public listener: `/ws` and the web client.
    pub listen: String,
    /// The operations listener: `/healthz`, `/readyz`, `/metrics`, `/stats`.
    pub ops_listen: String,
    /// This gateway's id; empty means a random one at start.
    pub id: String,
    /// Browser origins allowed to connect; requests without `Origin` are always allowed.
    pub allowed_origins: Vec<String>,
    pub max_text_bytes: usize,
    /// The largest message a client may send, after decompression (1009 beyond it).
    pub max_frame_bytes: usize,
    /// Agree permessage-deflate (RFC 7692) with clients that offer it.
    pub compression: bool,
    /// Frames shorter than this go out uncompressed even when compression is agreed.
    pub compress_min_bytes: usize,
    /// Frames a connection's outbound queue holds before the client is cut off (1013).
    pub outbound_queue: usize,
    pub sends_per_sec: u32,
    pub burst: u32,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    /// One user's connections across every gateway (a set in Redis, checked at each
    /// handshake). 0: no cap but `max_connections_per_user` on each gateway.
    pub max_user_connections: usize,
    pub max_rooms_per_connection: usize,
    /// Every inbound WebSocket frame (text, ping, pong, ...) takes a token from a bucket
    /// of `frames_burst` refilled at `frames_per_sec`; past it frames are refused
    /// (`rate_limited`), and `frames_burst` refusals within 10 s close the connection (1008).
    /// Each is at least twice its send counterpart (`sends_per_sec`, `burst`).
    pub frames_per_sec: u32,
    pub frames_burst: u32,
    /// How often the gateway sends a WebSocket ping to each connection, seconds.
    pub ping_interval_s: u64,
    /// A connection from which nothing (no frame, no pong) arrives for this long is
    /// closed, as is one whose writes make no progress for this long, seconds.
    pub idle_timeout_s: u64,
    /// A TCP connection must send a complete HTTP request head within this long, seconds.
    pub handshake_timeout_s: u64,
    /// TCP connections still in their HTTP phase (not upgraded) at once; more are dropped.
    pub max_pending_handshakes: usize,
    /// The same, from one source: an IPv4 address, or an IPv6 /64 (one host's usual
    /// share). More are dropped at accept; 0 sets no per-source cap.
    pub max_pending_handshakes_per_ip: usize,
    /// How long a close frame may take to go out before the TCP connection is dropped,
    /// seconds. A client cut off for not reading (1013) finds its close frame if it
    /// reads again within this long.
    pub close_timeout_s: u64,
    /// How long a command may wait for its publisher confirm, milliseconds.
    pub publish_timeout_ms: u64,
    /// How long a stopping gateway waits for its connections to close, seconds.
    pub shutdown_grace_s: u64,
    /// Serve `POST /dev/token` (mints a token for any name). Development only; HS256 only.
    pub dev_tokens: bool,
    /// Gather a connection's writes for this long and send them together (several
    /// WebSocket frames in one write), milliseconds; 0 writes at once.
    pub write_coalesce_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DispatcherSettings {
    /// Messages kept per room.
    pub history_limit: u64,
    /// Messages sent with `joined` when the client gives no usable `since`.
    pub history_on_join: u64,
    /// How long `(user, ref)` is remembered, seconds (at least 600).
    pub dedup_ttl_s: u64,
    /// Address of the dispatcher's `/healthz`, `/readyz` and `/metrics`.
    pub listen: String,
    /// Hold a command's publishes until every earlier publish of its room is confirmed,
    /// so a room's events reach the broker in seq order. Gateways repair any order
    /// (a seq that skips ahead is read from history), so this is a choice of cost, not
    /// of correctness (BENCHMARKS.md measures both).
    pub publish_in_room_order: bool,
    /// How long a kicked user is kept out of the room, seconds (0: may rejoin at once).
    pub kick_hold_s: u64,
    /// One user's `send`, `dm` and `typing` commands per second, and their burst, across
    /// every gateway and connection (a bucket in Redis). 0: no per-user limit.
    pub user_sends_per_sec: u32,
    pub user_send_burst: u32,
    /// One bot account's commands per second, and their burst. 0: no limit.
    pub bot_commands_per_sec: u32,
    pub bot_command_burst: u32,
    /// Bot logins (AMQP accounts) whose commands act with the global `admin` role, as a
    /// user whose token says `admin` would: the admin CLI's account (docs/ADMIN.md).
    pub admin_bots: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoomsSettings {
    /// Create public rooms on first join, the joiner becoming owner.
    pub auto_create: bool,
    /// Rooms one user may create in an hour (by joining rooms that do not exist yet);
    /// past it, the join is answered `rate_limited`. 0: no limit.
    pub max_created_per_hour: u64,
    /// A room that sees no command and has no member on any gateway for this long loses
    /// its keys (history included), seconds. 0: rooms are kept for ever.
    pub idle_expiry_s: u64,
    /// Rooms that exist from start, with their settings (`[[rooms.list]]` in a file).
    #[serde(default)]
    pub list: Vec<RoomConfig>,
}

/// A room declared in configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomConfig {
    pub id: String,
    /// `public` or `private`.
    #[serde(default = "public")]
    pub visibility: String,
    /// Only moderators and owners may send.
    #[serde(default)]
    pub announce: bool,
    #[serde(default)]
    pub owners: Vec<String>,
    #[serde(default)]
    pub moderators: Vec<String>,
    /// Overrides `dispatcher.history_limit` for this room.
    #[serde(default)]
    pub history_limit: Option<u64>,
    /// Overrides `dispatcher.history_on_join` for this room.
    #[serde(default)]
    pub history_on_join: Option<u64>,
}

fn public() -> String {
    "public".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
pub struct PresenceSettings {
    /// A gateway's presence entries vanish this long after it stops renewing them.
    pub ttl_s: u64,
    /// How often a gateway renews its liveness.
    pub renew_s: u64,
    /// Rooms larger than this get no `member` events (clients ask with `presence`).
    pub max_event_members: usize,
    /// In a room larger than `max_event_members`, `joined.members` holds a random
    /// sample of this many present users (the joiner always among them), with
    /// `members_total` giving the room's size; `presence` still lists everybody.
    pub max_join_members: usize,
}

/// Exporting trace spans to an OpenTelemetry collector (docs/OPERATIONS.md, "Traces").
#[derive(Debug, Clone, Deserialize)]
pub struct TraceSettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318` (spans go to
    /// `<url>/v1/traces`). Empty: nothing is exported. Needs a build with the `otlp`
    /// cargo feature; without it a non-empty value is reported and ignored.
    pub otlp_endpoint: String,
    /// The `service.name` the spans are exported under; empty: the binary's name.
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `warren_gateway=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// A string that never prints: URLs with passwords, secrets.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The `FILE` of `--config FILE` on this process's command line, if any.
pub fn config_arg() -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != "--config");
    args.next()?;
    args.next()
}

/// Settings layered the way every Warren process layers its own: the TOML `defaults`,
/// then `file` if given, then `<PREFIX>__<KEY>` environment variables (the process's,
/// or `env`), the keys in `lists` read as comma-separated lists.
pub fn layered<T: serde::de::DeserializeOwned>(
    defaults: &str,
    file: Option<&str>,
    prefix: &str,
    lists: &[&str],
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<T, config::ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::new(path, FileFormat::Toml));
    }
    let mut environment = Environment::with_prefix(prefix)
        .separator("__")
        .try_parsing(true)
        .list_separator(",");
    for key in lists {
        environment = environment.with_list_parse_key(key);
    }
    if let Some(vars) = env {
        environment = environment.source(Some(vars));
    }
    builder.add_source(environment).build()?.try_deserialize()
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&str>) -> Result<Settings, SettingsError> {
        Self::load_from(file, None)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&str>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, SettingsError> {
        Ok(layered(
            DEFAULTS,
            file,
            "WARREN",
            &[
                "gateway.allowed_origins",
                "amqp.gateway_accounts",
                "dispatcher.admin_bots",
                "amqp.urls",
                "redis.cluster_nodes",
                "auth.secrets",
            ],
            env,
        )?)
    }

    /// Reads `--config FILE` from the command line, then loads.
    pub fn from_args() -> Result<Settings, SettingsError> {
        Self::load(config_arg().as_deref())
    }

    /// True while the built-in development secret is in use.
    pub fn uses_dev_secret(&self) -> bool {
        self.auth.algorithm == "HS256" && self.auth.secret.expose() == DEV_SECRET
    }

    /// `POST /dev/token` is served: the setting is on and the default key is an HS256
    /// secret (a gateway that holds only public keys, or only `kid` keys, cannot sign).
    pub fn dev_tokens_enabled(&self) -> bool {
        self.gateway.dev_tokens
            && self.auth.algorithm == "HS256"
            && !self.auth.secret.expose().is_empty()
    }

    /// Why a gateway with these settings must not start: development authentication
    /// (the public secret, or `/dev/token`) on a public listener that is not loopback,
    /// without `auth.insecure_dev_auth_on_network`. `None` when it may start.
    pub fn dev_auth_exposure(&self) -> Option<String> {
        if self.auth.insecure_dev_auth_on_network || is_loopback(&self.gateway.listen) {
            return None;
        }
        let what = match (self.uses_dev_secret(), self.dev_tokens_enabled()) {
            (false, false) => return None,
            (true, false) => "the built-in development secret (auth.secret)",
            (false, true) => "development tokens (gateway.dev_tokens)",
            (true, true) => {
                "the built-in development secret (auth.secret) and development tokens (gateway.dev_tokens)"
            }
        };
        Some(format!(
            "refusing to start: gateway.listen {} is not a loopback address and {what} would let \
             anyone who reaches it sign in as any user, admins included. Set WARREN__AUTH__SECRET \
             to a secret of your own and turn gateway.dev_tokens off, or listen on 127.0.0.1; \
             for a throwaway demo only, auth.insecure_dev_auth_on_network = true",
            self.gateway.listen
        ))
    }
}

/// Whether a listen address (`ip:port`, `[ipv6]:port` or `localhost:port`) is on
/// loopback. Any other host name counts as reachable from elsewhere.
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_load_and_point_at_localhost() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        assert_eq!(s.amqp.prefix, "warren");
        assert_eq!(s.amqp.shards, 16);
        assert_eq!(s.amqp.addresses(), vec![s.amqp.url.expose()]);
        assert_eq!(s.amqp.command_queue_type, QueueType::Classic);
        assert!(s.amqp.url.expose().contains("127.0.0.1"));
        assert!(s.uses_dev_secret());
        assert!(s.dispatcher.dedup_ttl_s >= 600);
        assert_eq!(s.gateway.write_coalesce_ms, 0);
    }

    #[test]
    fn environment_overrides_any_key_and_lists() {
        let env: HashMap<String, String> = [
            ("WARREN__AMQP__PREFIX", "t42"),
            ("WARREN__AMQP__SHARDS", "8"),
            (
                "WARREN__GATEWAY__ALLOWED_ORIGINS",
                "http://a.test,http://b.test",
            ),
            ("WARREN__AUTH__SECRET", "s3cret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = Settings::load_from(None, Some(env)).unwrap();
        assert_eq!(s.amqp.prefix, "t42");
        assert_eq!(s.amqp.shards, 8);
        assert_eq!(
            s.gateway.allowed_origins,
            vec!["http://a.test", "http://b.test"]
        );
        assert!(!s.uses_dev_secret());
    }

    #[test]
    fn rooms_can_be_declared_in_a_file() {
        let dir = std::env::temp_dir().join(format!("warren-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rooms.toml");
        std::fs::write(
            &file,
            "[[rooms.list]]\nid = \"news\"\nannounce = true\nowners = [\"alice\"]\n\n[[rooms.list]]\nid = \"staff\"\nvisibility = \"private\"\n",
        )
        .unwrap();
        let s = Settings::load_from(file.to_str(), Some(HashMap::new())).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(s.rooms.list.len(), 2);
        assert!(s.rooms.list[0].announce);
        assert_eq!(s.rooms.list[0].visibility, "public");
        assert_eq!(s.rooms.list[0].owners, vec!["alice"]);
        assert_eq!(s.rooms.list[1].visibility, "private");
        assert_eq!(s.presence.ttl_s, 15);
    }

    #[test]
    fn hostile_input_limits_hold_together() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        let g = &s.gateway;
        // A pong has a whole ping interval and more to arrive before the idle timeout.
        assert!(g.ping_interval_s * 2 <= g.idle_timeout_s);
        // A client may join up to its room cap in one burst without being refused.
        assert!(g.frames_burst as usize >= g.max_rooms_per_connection);
        assert!(g.frames_per_sec >= 2 * g.sends_per_sec && g.frames_burst >= 2 * g.burst);
        assert!(g.handshake_timeout_s >= 1 && g.max_pending_handshakes >= 1);
    }

    #[test]
    fn development_auth_is_refused_off_loopback() {
        let with = |vars: &[(&str, &str)]| {
            let env = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Settings::load_from(None, Some(env)).unwrap()
        };
        // Loopback: the local stack stays as easy as it is.
        for listen in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "127.0.0.2:80",
        ] {
            let s = with(&[
                ("WARREN__GATEWAY__LISTEN", listen),
                ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ]);
            assert_eq!(s.dev_auth_exposure(), None, "{listen}");
        }
        // Anywhere else: the dev secret, dev tokens, or both are refused.
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.1.2.3:8080",
            "chat.example:8080",
        ] {
            let dev_secret = with(&[("WARREN__GATEWAY__LISTEN", listen)]);
            let refused = dev_secret.dev_auth_exposure().expect(listen);
            assert!(refused.contains("development secret"), "{refused}");
            let dev_tokens = with(&[
                ("WARREN__GATEWAY__LISTEN", listen),
                ("WARREN__AUTH__SECRET", "own-secret"),
                ("WARREN__GATEWAY__DEV_TOKENS", "true"),
            ]);
            let refused = dev_tokens.dev_auth_exposure().expect(listen);
            assert!(refused.contains("development tokens"), "{refused}");
            let own = with(&[
                ("WARREN__GATEWAY__LISTEN", listen),
                ("WARREN__AUTH__SECRET", "own-secret"),
            ]);
            assert_eq!(own.dev_auth_exposure(), None, "{listen}");
            let demo = with(&[
                ("WARREN__GATEWAY__LISTEN", listen),
                ("WARREN__GATEWAY__DEV_TOKENS", "true"),
                ("WARREN__AUTH__INSECURE_DEV_AUTH_ON_NETWORK", "true"),
            ]);
            assert_eq!(demo.dev_auth_exposure(), None, "{listen}");
        }
    }

    #[test]
    fn redis_cluster_nodes_are_a_list_and_default_to_none() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        assert!(
            s.redis.cluster_nodes.is_empty(),
            "a single Redis by default"
        );
        let env = [(
            "WARREN__REDIS__CLUSTER_NODES".to_owned(),
            "redis://127.0.0.1:7101,redis://127.0.0.1:7102".to_owned(),
        )];
        let s = Settings::load_from(None, Some(env.into_iter().collect())).unwrap();
        let nodes: Vec<&str> = s.redis.cluster_nodes.iter().map(Secret::expose).collect();
        assert_eq!(nodes, ["redis://127.0.0.1:7101", "redis://127.0.0.1:7102"]);
        assert!(
            !format!("{:?}", s.redis).contains("7101"),
            "seed URLs do not print"
        );
    }

    #[test]
    fn auth_key_sets_and_claim_rules_come_from_the_environment() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        assert!(s.auth.secrets.is_empty() && s.auth.jwks_file.is_none());
        assert!(s.auth.issuer.is_none() && s.auth.audience.is_none());
        assert_eq!(s.auth.max_lifetime_s, 86_400);
        let env = [
            ("WARREN__AUTH__SECRETS", "k2:new-secret,k1:old-secret"),
            ("WARREN__AUTH__JWKS_FILE", "/etc/warren/jwks.json"),
            ("WARREN__AUTH__ISSUER", "https://id.example"),
            ("WARREN__AUTH__AUDIENCE", "warren"),
            ("WARREN__AUTH__MAX_LIFETIME_S", "3600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = Settings::load_from(None, Some(env)).unwrap();
        let secrets: Vec<&str> = s.auth.secrets.iter().map(Secret::expose).collect();
        assert_eq!(secrets, ["k2:new-secret", "k1:old-secret"]);
        assert_eq!(s.auth.jwks_file.as_deref(), Some("/etc/warren/jwks.json"));
        assert_eq!(s.auth.issuer.as_deref(), Some("https://id.example"));
        assert_eq!(s.auth.audience.as_deref(), Some("warren"));
        assert_eq!(s.auth.max_lifetime_s, 3600);
        assert!(!format!("{:?}", s.auth).contains("new-secret"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(None, Some(HashMap::new())).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains(DEV_SECRET));
        assert!(!shown.contains("guest:guest"));
    }
}
