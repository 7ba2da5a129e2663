//! Whether the machine's RabbitMQ and Redis answer, checked before anything starts, so
//! that a stack fails with one clear sentence instead of a process log full of retries.

use anyhow::Context;

use crate::{broker, store};

/// What to run when a service does not answer.
const HINT: &str = "start both with scripts/ensure-services.sh";

/// Connects to RabbitMQ and pings Redis (both on 127.0.0.1), each bounded.
pub async fn check() -> anyhow::Result<()> {
    let admin = broker::Admin::connect()
        .await
        .with_context(|| format!("RabbitMQ does not answer at {}; {HINT}", broker::AMQP_URL))?;
    admin.close().await;
    store::ping()
        .await
        .with_context(|| format!("Redis does not answer at {}; {HINT}", store::REDIS_URL))
}
