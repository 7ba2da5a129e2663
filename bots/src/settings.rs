//! The moderation bot's own settings, layered like the services' but separate from
//! them: built-in defaults, then an optional TOML file (`--config FILE`), then
//! `WARREN_BOT__<KEY>` environment variables (lists comma-separated).
//!
//! They are separate because a bot is not part of a deployment's configuration: it runs
//! under its own RabbitMQ account, often somewhere else, and needs only the few facts of
//! the contract that every bot needs (prefix, shard count) plus its own rules.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::settings::{layered, LogSettings, Secret};
use proto::ids::{validate_room, validate_user, MAX_ID_LEN};
use serde::Deserialize;

use crate::words::WordList;

/// The defaults: the local stack (`scripts/run-local.sh`) and its `warren-bot` account.
pub const DEFAULTS: &str = r#"
amqp_url = "amqp://warren-bot:warren-bot@127.0.0.1:5672/%2f"
prefix = "warren"
shards = 16
name = "modbot"
rooms = ["general"]
words = []
strikes = 3
mute_s = 600
strike_window_s = 3600
prefetch = 64
publish_timeout_ms = 5000
backoff_min_ms = 100
backoff_max_ms = 5000
log_level = "info"
log_format = "text"
"#;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct BotSettings {
    /// The bot's own account: its login is the bot's user id in every room.
    pub amqp_url: Secret,
    /// The deployment's `amqp.prefix`.
    pub prefix: String,
    /// The deployment's `amqp.shards`; commands are routed by it.
    pub shards: u32,
    /// Names the bot's queues, `<prefix>.bot.<name>.*`: `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// The rooms the bot guards: it binds `room.<room>.message` for each. Its account's
    /// topic permissions on `<prefix>.events` must grant those keys (docs/BOTS.md); the
    /// broker refuses any other binding, so a bot sees only the rooms it was granted.
    pub rooms: Vec<String>,
    /// Words that get a message deleted: matched whole and case-insensitively.
    pub words: Vec<String>,
    /// Deleted messages within `strike_window_s` that get their sender muted.
    pub strikes: u32,
    /// How long a mute lasts, seconds.
    pub mute_s: u64,
    /// A strike older than this is forgotten, seconds.
    pub strike_window_s: u64,
    /// Unacknowledged events the bot may hold.
    pub prefetch: u16,
    /// How long a command may wait for its publisher confirm, milliseconds.
    pub publish_timeout_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
}

impl BotSettings {
    /// Defaults, then `file` if given, then the environment (the process's, or `env`).
    pub fn load_from(
        file: Option<&str>,
        env: Option<HashMap<String, String>>,
    ) -> Result<BotSettings, SettingsError> {
        let settings: BotSettings =
            layered(DEFAULTS, file, "WARREN_BOT", &["words", "rooms"], env)?;
        settings.check()?;
        Ok(settings)
    }

    /// Reads `--config FILE` from the command line, then loads.
    pub fn from_args() -> Result<BotSettings, SettingsError> {
        Self::load_from(common::settings::config_arg().as_deref(), None)
    }

    /// The bot's user id: the login of its AMQP account.
    pub fn login(&self) -> String {
        common::amqp::login_of(self.amqp_url.expose())
    }

    /// The word list, checked by [`BotSettings::check`].
    pub fn word_list(&self) -> Result<WordList, SettingsError> {
        WordList::new(&self.words).map_err(|e| SettingsError::Invalid(format!("words: {e}")))
    }

    pub fn mute(&self) -> Duration {
        Duration::from_secs(self.mute_s)
    }

    pub fn strike_window(&self) -> Duration {
        Duration::from_secs(self.strike_window_s)
    }

    pub fn log(&self) -> LogSettings {
        LogSettings {
            level: self.log_level.clone(),
            format: self.log_format.clone(),
        }
    }

    fn check(&self) -> Result<(), SettingsError> {
        let fail = |what: String| Err(SettingsError::Invalid(what));
        if self.prefix.is_empty() {
            return fail("prefix must not be empty".into());
        }
        if self.shards == 0 {
            return fail("shards must be at least 1".into());
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_ID_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return fail(format!("name {:?} must be [a-z0-9_-]{{1,64}}", self.name));
        }
        if let Err(e) = validate_user(&self.login()) {
            return fail(format!(
                "the AMQP login {:?} is the bot's user id and must be a valid one: {e}",
                self.login()
            ));
        }
        if self.rooms.is_empty() {
            return fail("rooms must name at least one room".into());
        }
        for room in &self.rooms {
            if let Err(e) = validate_room(room) {
                return fail(format!("rooms: {room:?} is not a room id: {e}"));
            }
        }
        self.word_list()?;
        if self.strikes == 0 || self.mute_s == 0 || self.strike_window_s == 0 {
            return fail("strikes, mute_s and strike_window_s must be at least 1".into());
        }
        if self.prefetch == 0 || self.publish_timeout_ms == 0 {
            return fail("prefetch and publish_timeout_ms must be at least 1".into());
        }
        let formats: HashSet<&str> = ["text", "json"].into();
        if !formats.contains(self.log_format.as_str()) {
            return fail(format!(
                "log_format {:?} is not text or json",
                self.log_format
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// Each of `values` for `key`, on an otherwise valid bot, is refused.
    fn assert_refused(key: &str, values: &[&str]) {
        for value in values {
            let r = BotSettings::load_from(None, env(&[("WARREN_BOT__WORDS", "x"), (key, value)]));
            assert!(r.is_err(), "{key}={value:?} accepted");
        }
    }

    #[test]
    fn environment_configures_the_bot() {
        let s = BotSettings::load_from(
            None,
            env(&[
                (
                    "WARREN_BOT__AMQP_URL",
                    "amqp://warren-bot-mod:pw@127.0.0.1:5672/%2f",
                ),
                ("WARREN_BOT__PREFIX", "t1"),
                ("WARREN_BOT__SHARDS", "8"),
                ("WARREN_BOT__WORDS", "Heck,darn"),
                ("WARREN_BOT__STRIKES", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.prefix, "t1");
        assert_eq!(s.shards, 8);
        assert_eq!(s.words, vec!["Heck", "darn"]);
        assert_eq!(s.strikes, 2);
        assert_eq!(s.login(), "warren-bot-mod");
        assert_eq!(s.name, "modbot");
        assert_eq!(s.rooms, vec!["general"]);
        assert!(s.word_list().unwrap().first_match("oh HECK").is_some());
    }

    #[test]
    fn rooms_are_room_ids() {
        let s = BotSettings::load_from(
            None,
            env(&[("WARREN_BOT__WORDS", "x"), ("WARREN_BOT__ROOMS", "a,b-2")]),
        )
        .unwrap();
        assert_eq!(s.rooms, vec!["a", "b-2"]);
        // A wildcard would bind every room, dm rooms included: never a room id.
        assert_refused("WARREN_BOT__ROOMS", &["", "*", "#", "a.b", "Upper"]);
    }

    #[test]
    fn a_bot_without_words_is_refused() {
        let err = BotSettings::load_from(None, env(&[])).unwrap_err();
        assert!(err.to_string().contains("words"), "{err}");
    }

    #[test]
    fn names_must_fit_in_queue_names() {
        assert_refused("WARREN_BOT__NAME", &["", "a.b", "Mod", "a*"]);
    }

    #[test]
    fn the_example_file_loads() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/modbot.toml");
        let s = BotSettings::load_from(Some(example), env(&[])).unwrap();
        assert_eq!(s.name, "modbot");
        assert_eq!(s.login(), "warren-bot");
        assert_eq!(s.strikes, 3);
        let overridden =
            BotSettings::load_from(Some(example), env(&[("WARREN_BOT__STRIKES", "5")])).unwrap();
        assert_eq!(overridden.strikes, 5);
    }

    #[test]
    fn the_url_does_not_print() {
        let s = BotSettings::load_from(None, env(&[("WARREN_BOT__WORDS", "x")])).unwrap();
        assert!(!format!("{s:?}").contains("warren-bot:warren-bot"));
    }
}
