//! The command line: one subcommand per task, `--json` for scripts.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "warren-admin",
    version,
    about = "Look after a Warren deployment as an audited admin bot"
)]
pub struct Cli {
    /// A settings file (TOML, the services' keys plus [admin]); WARREN__* variables win.
    #[arg(long, global = true)]
    pub config: Option<String>,
    /// The deployment's prefix (amqp.prefix and redis.prefix), instead of the settings'.
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every room with its member count, who is present, and its size.
    Rooms,
    /// One room: settings, roles, present members, bans, mutes, seq and epoch.
    Room { room: String },
    /// Changes a room's settings (owners and admins).
    Settings(SettingsArgs),
    /// Gives a user a role in a room (member or moderator).
    Grant(RoleArgs),
    /// Takes a role away (revoking member takes every role).
    Revoke(RoleArgs),
    /// Bans a user: out of the room(s) at once, and kept out.
    Ban(RestrictArgs),
    /// Lifts a ban.
    Unban(LiftArgs),
    /// Mutes a user: they stay, but cannot send.
    Mute(RestrictArgs),
    /// Lifts a mute.
    Unmute(LiftArgs),
    /// A page of a room's history, oldest first.
    Messages {
        room: String,
        /// Only messages with a seq below this.
        #[arg(long)]
        before: Option<u64>,
        /// At most this many (the protocol caps a page at 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Deletes the message with this seq from a room's history; members are told.
    Delete {
        room: String,
        seq: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Each command shard's queue, its backlog and the dispatcher consuming it.
    Shards,
    /// Each registered gateway, its users, and the backlog of its queue.
    Gateways,
    /// The latest moderation actions, newest first, with who took them.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VisibilityArg {
    Public,
    Private,
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    pub room: String,
    #[arg(long)]
    pub visibility: Option<VisibilityArg>,
    #[arg(long)]
    pub announce: Option<Switch>,
    #[arg(long)]
    pub history_limit: Option<u64>,
    #[arg(long)]
    pub history_on_join: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    pub room: String,
    pub user: String,
    /// member or moderator.
    pub role: String,
}

/// Which rooms an action covers: one command per room.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RoomsArg {
    /// A room (repeat for several).
    #[arg(long = "room")]
    pub rooms: Vec<String>,
    /// Every room (dm rooms have no moderators and are left out).
    #[arg(long)]
    pub all_rooms: bool,
}

#[derive(Debug, Args)]
pub struct RestrictArgs {
    pub user: String,
    #[command(flatten)]
    pub rooms: RoomsArg,
    /// How long: seconds, or with a unit (90s, 10m, 2h, 7d). Default: permanent.
    #[arg(long = "for", conflicts_with = "until")]
    pub duration: Option<String>,
    /// Until when: unix seconds.
    #[arg(long)]
    pub until: Option<u64>,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct LiftArgs {
    pub user: String,
    #[command(flatten)]
    pub rooms: RoomsArg,
}

/// `90`, `90s`, `10m`, `2h`, `7d` in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (90, 90s, 10m, 2h, 7d)"))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
