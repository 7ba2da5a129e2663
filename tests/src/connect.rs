//! How a client opens a connection: which token, where it travels (header, query,
//! cookie), which `Origin` and subprotocol. Used both by [`crate::client::Client`] and
//! for raw upgrade requests whose refusals are read byte for byte.

/// Where the token goes in the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVia {
    /// `Authorization: Bearer <jwt>`
    Header,
    /// `/ws?token=<jwt>`
    Query,
    /// `Cookie: warren_token=<jwt>`
    Cookie,
}

/// How to open a connection: which token, how it travels, which `Origin`.
#[derive(Debug, Clone)]
pub struct Connect {
    pub token: Option<String>,
    pub via: TokenVia,
    pub origin: Option<String>,
    /// `Sec-WebSocket-Protocol` offered, if any.
    pub subprotocol: Option<String>,
}

impl Connect {
    pub fn token(token: impl Into<String>) -> Connect {
        Connect {
            token: Some(token.into()),
            via: TokenVia::Header,
            origin: None,
            subprotocol: None,
        }
    }

    /// No token at all.
    pub fn anonymous() -> Connect {
        Connect {
            token: None,
            via: TokenVia::Header,
            origin: None,
            subprotocol: None,
        }
    }

    pub fn via(mut self, via: TokenVia) -> Connect {
        self.via = via;
        self
    }

    pub fn origin(mut self, origin: &str) -> Connect {
        self.origin = Some(origin.to_owned());
        self
    }

    pub fn subprotocol(mut self, protocol: &str) -> Connect {
        self.subprotocol = Some(protocol.to_owned());
        self
    }

    /// The request path, with the token when it travels in the query.
    pub fn path(&self) -> String {
        match (&self.token, self.via) {
            (Some(t), TokenVia::Query) => format!("/ws?token={t}"),
            _ => "/ws".to_owned(),
        }
    }

    /// Extra request headers: token (header or cookie), `Origin`, subprotocol.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        match (&self.token, self.via) {
            (Some(t), TokenVia::Header) => h.push(("Authorization", format!("Bearer {t}"))),
            (Some(t), TokenVia::Cookie) => h.push(("Cookie", format!("warren_token={t}"))),
            _ => {}
        }
        if let Some(o) = &self.origin {
            h.push(("Origin", o.clone()));
        }
        if let Some(p) = &self.subprotocol {
            h.push(("Sec-WebSocket-Protocol", p.clone()));
        }
        h
    }

    /// A complete WebSocket upgrade request head, for [`crate::http::request`].
    pub fn raw_upgrade_head(&self, host: &str) -> String {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            self.path()
        );
        for (k, v) in self.headers() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}
