//! `warren-admin`: the operators' command line. It looks after rooms, users and
//! messages by publishing the same commands a moderator's client sends, as a bot whose
//! login the dispatchers name in `dispatcher.admin_bots`: the dispatcher gives it the
//! global `admin` role, checks every command like any other, and audits what it does.
//! It never writes to Redis or the broker behind the dispatchers' back; what it only
//! reads (the list of rooms, a room's state, shard owners, gateways, the audit list) it
//! reads directly, read-only (docs/ADMIN.md says which and why).
//!
//! How the modules fit:
//! - [`settings`]: the services' configuration (file, then `WARREN__*`) plus `[admin]`.
//! - [`cli`]: the subcommands and their options (clap).
//! - [`link`]: the AMQP side: commands as the admin bot, answers by `correlation_id`.
//! - [`store`]: read-only views of Redis (rooms, one room, gateways, the audit list).
//! - [`broker`]: read-only views of RabbitMQ (shard owners, gateway queue backlogs).
//! - [`actions`]: what each subcommand does; [`output`]: tables or JSON.

pub mod actions;
pub mod broker;
pub mod cli;
pub mod link;
pub mod output;
pub mod settings;
pub mod store;

pub use actions::run;
pub use settings::AdminConfig;
