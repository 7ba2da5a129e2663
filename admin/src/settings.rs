//! The CLI's settings: the same layers as every Warren process (built-in defaults, then
//! `--config FILE`, then `WARREN__SECTION__KEY`), so it reads a deployment's own file
//! for `amqp.prefix`, `amqp.shards` and `redis`, plus an `[admin]` section of its own:
//! its RabbitMQ account (whose login is its identity) and how long to wait.

use common::settings::{layered, AmqpSettings, RedisSettings, Secret};
use serde::Deserialize;

use crate::cli::Cli;

/// The `[admin]` defaults: the local stack's development accounts.
pub const ADMIN_DEFAULTS: &str = r#"
[admin]
amqp_url = "amqp://warren-admin-cli:warren-admin-cli@127.0.0.1:5672/%2f"
name = "admin"
timeout_ms = 10000
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub admin: AdminSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// The CLI's own RabbitMQ account: a bot account whose login is listed in the
    /// dispatchers' `dispatcher.admin_bots`. Its login is the actor of every action.
    pub amqp_url: Secret,
    /// Names its queues, `<prefix>.bot.<name>.*`, as for any bot account.
    pub name: String,
    /// How long to wait for the broker's confirm, and for each answer, milliseconds.
    pub timeout_ms: u64,
}

impl AdminConfig {
    /// Defaults, then `file`, then the environment; `--prefix` sets both prefixes.
    pub fn load(file: Option<&str>, cli: &Cli) -> Result<AdminConfig, config::ConfigError> {
        let defaults = format!("{}\n{ADMIN_DEFAULTS}", common::settings::DEFAULTS);
        let mut config: AdminConfig = layered(
            &defaults,
            file,
            "WARREN",
            &["amqp.gateway_accounts", "amqp.urls", "redis.cluster_nodes"],
            None,
        )?;
        if let Some(prefix) = &cli.prefix {
            config.amqp.prefix = prefix.clone();
            config.redis.prefix = prefix.clone();
        }
        Ok(config)
    }

    /// The CLI's identity: its account's login.
    pub fn login(&self) -> String {
        common::amqp::login_of(self.admin.amqp_url.expose())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.admin.timeout_ms)
    }
}
