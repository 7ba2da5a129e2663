//! Removal of everything a stack left under its prefix, callable from `Drop`.

use std::time::Duration;

use crate::{broker, store};

/// The longest a cleanup may block the dropping thread.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Deletes `queues`, `exchanges` and anything else RabbitMQ lists under `<prefix>.`, and
/// every Redis key under `<prefix>:`. Returns what went wrong.
pub async fn remove(prefix: &str, queues: &[String], exchanges: &[String]) -> Vec<String> {
    let mut problems = broker::remove_all(prefix, queues, exchanges).await;
    if let Err(e) = store::remove_all(prefix).await {
        problems.push(format!("redis: {e:#}"));
    }
    problems
}

/// As [`remove`], blocking (bounded).
///
/// It runs on a thread of its own with its own runtime: it is called from `Drop`, where
/// the test's runtime may be shutting down, or blocked in this very call.
pub fn remove_blocking(prefix: &str, queues: Vec<String>, exchanges: Vec<String>) -> Vec<String> {
    let prefix = prefix.to_owned();
    let (done, finished) = std::sync::mpsc::channel();
    let cleaner = std::thread::spawn(move || {
        let problems = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Err(e) => vec![format!("cleanup runtime: {e}")],
            Ok(rt) => rt.block_on(remove(&prefix, &queues, &exchanges)),
        };
        let _ = done.send(problems);
    });
    let problems = finished
        .recv_timeout(CLEANUP_TIMEOUT)
        .unwrap_or_else(|_| vec![format!("cleanup did not finish within {CLEANUP_TIMEOUT:?}")]);
    // A cleaner that overran is left to finish on its own; the test does not wait for it.
    drop(cleaner);
    problems
}
