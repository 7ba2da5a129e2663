//! Restarting the machine's shared Redis, with or without its data, as a guard that
//! starts it again (with the settings it had) when dropped, even when a test panics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::services::{run, run_blocking, wait_for, START_TIMEOUT};

/// The most keys of other deployments a data-loss restart carries over.
const MAX_PRESERVED_KEYS: usize = 100_000;

/// How the running Redis was started, read back with `CONFIG GET`, so that a restart
/// uses the same settings (`redis-server --daemonize yes --bind ... --port ... --save
/// ... --appendonly ... --dir ... --logfile ...`).
#[derive(Debug, Clone)]
struct RedisConfig {
    bind: String,
    port: String,
    save: String,
    appendonly: String,
    dir: String,
    dbfilename: String,
    logfile: String,
}

impl RedisConfig {
    async fn read() -> anyhow::Result<RedisConfig> {
        let mut con = redis_connection().await?;
        let mut values = std::collections::HashMap::new();
        for key in [
            "bind",
            "port",
            "save",
            "appendonly",
            "dir",
            "dbfilename",
            "logfile",
        ] {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(key)
                .query_async(&mut con)
                .await?;
            values.insert(key, pair.get(1).cloned().unwrap_or_default());
        }
        let take = |k: &str| values.get(k).cloned().unwrap_or_default();
        Ok(RedisConfig {
            bind: take("bind"),
            port: take("port"),
            save: take("save"),
            appendonly: take("appendonly"),
            dir: take("dir"),
            dbfilename: take("dbfilename"),
            logfile: take("logfile"),
        })
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["--daemonize".to_owned(), "yes".to_owned()];
        args.push("--bind".into());
        args.extend(self.bind.split_whitespace().map(str::to_owned));
        for (flag, value) in [
            ("--port", &self.port),
            ("--save", &self.save),
            ("--appendonly", &self.appendonly),
            ("--dir", &self.dir),
            ("--logfile", &self.logfile),
        ] {
            args.push(flag.into());
            args.push(value.clone());
        }
        args
    }

    fn dump(&self) -> PathBuf {
        Path::new(&self.dir).join(&self.dbfilename)
    }
}

async fn redis_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    crate::store::connect_within(Duration::from_secs(5)).await
}

fn redis_answers() -> bool {
    // A blocking PING over a raw socket: usable from Drop as well.
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 6379)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Whether a restart keeps what Redis holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// `SHUTDOWN SAVE`, then start again: the dump is loaded, nothing is lost.
    KeepingData,
    /// `SHUTDOWN NOSAVE` and no dump: this deployment's keys are lost. Keys of other
    /// deployments (other prefixes) are carried over with `DUMP`/`RESTORE`, so that the
    /// machine keeps what it had.
    LosingData { prefix: String },
}

/// Redis shut down while held; started again (same settings) on
/// [`RedisOutage::end`] or drop. A dump file this creates is removed at the end, and
/// one that existed before is put back.
pub struct RedisOutage {
    config: RedisConfig,
    restart: Restart,
    down: bool,
    /// A dump that was there before, moved aside.
    backup: Option<PathBuf>,
    /// Other deployments' keys: name, TTL in ms (0: none), `DUMP` payload.
    preserved: Vec<(String, i64, Vec<u8>)>,
    pub since: Instant,
}

impl RedisOutage {
    pub async fn begin(restart: Restart) -> RedisOutage {
        let config = RedisConfig::read()
            .await
            .unwrap_or_else(|e| panic!("reading Redis' settings: {e:#}"));
        let dump = config.dump();
        let backup = dump.is_file().then(|| {
            let aside = dump.with_extension("rdb.warren-faults-backup");
            std::fs::rename(&dump, &aside)
                .unwrap_or_else(|e| panic!("moving {} aside: {e}", dump.display()));
            aside
        });
        let mut outage = RedisOutage {
            config,
            restart: restart.clone(),
            down: false,
            backup,
            preserved: Vec::new(),
            since: Instant::now(),
        };
        if let Restart::LosingData { prefix } = &restart {
            outage.preserved = keys_of_others(prefix)
                .await
                .unwrap_or_else(|e| panic!("saving other deployments' keys: {e:#}"));
        }
        let how = match restart {
            Restart::KeepingData => "SAVE",
            Restart::LosingData { .. } => "NOSAVE",
        };
        // SHUTDOWN closes the connection instead of answering; what it prints only
        // matters when Redis is still up afterwards.
        let said = run("redis-cli", &["-p", &outage.config.port, "SHUTDOWN", how]).await;
        if let Err(e) = wait_for("Redis to stop", || !redis_answers()).await {
            panic!("{e:#}; redis-cli SHUTDOWN {how} said {said:?}");
        }
        outage.down = true;
        if matches!(outage.restart, Restart::LosingData { .. }) {
            let _ = std::fs::remove_file(outage.config.dump());
        }
        outage.since = Instant::now();
        outage
    }

    /// Starts Redis again with the same settings, waits for PING, puts back other
    /// deployments' keys after a data loss. Returns how long it was down.
    pub async fn end(mut self) -> Duration {
        let down = self.since.elapsed();
        self.start_blocking()
            .unwrap_or_else(|e| panic!("restarting Redis: {e:#}"));
        if !self.preserved.is_empty() {
            restore(&self.preserved)
                .await
                .unwrap_or_else(|e| panic!("restoring other deployments' keys: {e:#}"));
            eprintln!(
                "[faults] {} keys of other deployments carried over the data loss",
                self.preserved.len()
            );
            self.preserved.clear();
        }
        self.tidy();
        down
    }

    fn start_blocking(&mut self) -> anyhow::Result<()> {
        if !self.down {
            return Ok(());
        }
        self.down = false;
        let args = self.config.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_blocking("redis-server", &args)?;
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while !redis_answers() {
            if std::time::Instant::now() > deadline {
                bail!("Redis did not answer PING within {START_TIMEOUT:?} of starting");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Removes the dump this outage made and puts back the one that was there.
    fn tidy(&mut self) {
        let dump = self.config.dump();
        if dump.is_file() {
            let _ = std::fs::remove_file(&dump);
        }
        if let Some(aside) = self.backup.take() {
            if let Err(e) = std::fs::rename(&aside, &dump) {
                eprintln!(
                    "[faults] could not put {} back from {}: {e}",
                    dump.display(),
                    aside.display()
                );
            }
        }
    }
}

impl Drop for RedisOutage {
    fn drop(&mut self) {
        if self.down {
            match self.start_blocking() {
                Ok(()) => eprintln!("[faults] Redis started again by the outage guard"),
                Err(e) => eprintln!("[faults] Redis could NOT be started again: {e:#}"),
            }
            if !self.preserved.is_empty() {
                eprintln!(
                    "[faults] {} keys of other deployments were not restored (the test failed mid-outage)",
                    self.preserved.len()
                );
            }
        }
        self.tidy();
    }
}

/// Every key not under `<prefix>:` with its TTL and `DUMP` payload.
async fn keys_of_others(prefix: &str) -> anyhow::Result<Vec<(String, i64, Vec<u8>)>> {
    let mut con = redis_connection().await?;
    let mine = format!("{prefix}:");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..10_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(&mine)));
        if keys.len() > MAX_PRESERVED_KEYS {
            bail!("more than {MAX_PRESERVED_KEYS} other keys; not a machine to wipe");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let (ttl, payload): (i64, Option<Vec<u8>>) = redis::pipe()
            .cmd("PTTL")
            .arg(&key)
            .cmd("DUMP")
            .arg(&key)
            .query_async(&mut con)
            .await?;
        if let Some(payload) = payload {
            // -1: no expiry (RESTORE takes 0); -2: gone meanwhile (skipped above).
            out.push((key, ttl.max(0), payload));
        }
    }
    Ok(out)
}

async fn restore(keys: &[(String, i64, Vec<u8>)]) -> anyhow::Result<()> {
    let mut con = redis_connection().await?;
    for (key, ttl, payload) in keys {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(*ttl)
            .arg(payload.as_slice())
            .arg("REPLACE")
            .query_async(&mut con)
            .await?;
    }
    Ok(())
}
