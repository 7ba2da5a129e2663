//! A service's TCP listeners: bound to the configured address, or, when whoever started
//! the process bound one already and handed it over, that one. The launcher
//! (`warren-stack`) binds port 0 itself and passes the socket as descriptor
//! `$WARREN_LISTEN_FD` (the public listener) and `$WARREN_OPS_LISTEN_FD` (a gateway's
//! operations listener), as systemd's socket activation does: it then knows every port
//! before the service runs, and no other process can take one in between.

use std::os::fd::{FromRawFd, RawFd};

use tokio::net::TcpListener;

/// The public listener handed over (a gateway's, or a dispatcher's HTTP).
pub const LISTEN_FD: &str = "WARREN_LISTEN_FD";
/// A gateway's operations listener handed over.
pub const OPS_LISTEN_FD: &str = "WARREN_OPS_LISTEN_FD";

/// A listener that could not be bound (or taken over).
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {source}")]
pub struct ListenError {
    pub addr: String,
    pub source: std::io::Error,
}

/// The listener the descriptor named by `handed_over` holds if that variable is set,
/// else a new one bound to `addr` (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str, handed_over: &str) -> Result<TcpListener, ListenError> {
    let error = |source| ListenError {
        addr: addr.to_owned(),
        source,
    };
    match std::env::var(handed_over) {
        Ok(fd) => take_over(handed_over, &fd).map_err(error),
        Err(_) => TcpListener::bind(addr).await.map_err(error),
    }
}

fn take_over(variable: &str, fd: &str) -> std::io::Result<TcpListener> {
    let fd: RawFd = fd.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{variable}={fd} is not a descriptor number"),
        )
    })?;
    // SAFETY: the process that started this one put a bound TCP listener at `fd` and
    // left it to us; nothing else in this process uses that number. Each variable names
    // a different descriptor and each listener is bound once per process.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.local_addr()?; // fails unless it is a socket
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}
