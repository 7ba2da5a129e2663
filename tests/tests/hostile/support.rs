//! What the hostile tests share: their waits, raw connections past their `welcome`, the
//! frames they send and the closes they expect, and the gateway's counters.

use std::time::Duration;

use warren_tests::hostile_support::{metrics, sample, RawRead, RawWs};
use warren_tests::{eventually, Connect, Stack, StackOptions};

/// How long a close or an answer may take to arrive.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long counters may take to converge.
pub const CONVERGE: Duration = Duration::from_secs(10);
/// How long a close the gateway owes at once may take, on a loaded machine: far less
/// than anything that would close the connection otherwise (ping, idle timeout).
pub const AT_ONCE: Duration = Duration::from_secs(3);

/// What a client offering permessage-deflate sends.
pub const DEFLATE_OFFER: [(&str, &str); 1] = [(
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
)];
/// What it is answered: no context kept on either side, so the gateway can compress
/// each event once for every member.
pub const DEFLATE_AGREED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The limits the flood tests run under: the stack's own lifts the send rate (and with
/// it the frame budget, which is at least twice the send budget), these put it back.
pub fn budgeted(options: StackOptions) -> StackOptions {
    options
        .env("WARREN__GATEWAY__SENDS_PER_SEC", "20")
        .env("WARREN__GATEWAY__BURST", "40")
        .env("WARREN__GATEWAY__FRAMES_PER_SEC", "100")
        .env("WARREN__GATEWAY__FRAMES_BURST", "500")
}

/// A stack of one gateway and one dispatcher with these settings, as
/// [`StackOptions::settings`] takes them (`"gateway.outbound_queue=32 ..."`).
pub async fn one_gateway(settings: &str) -> Stack {
    Stack::start(StackOptions::new(1, 1).settings(settings)).await
}

/// A raw connection for `user` on gateway 0, past its `welcome`.
pub async fn raw(stack: &Stack, user: &str, recv_buffer: Option<u32>) -> RawWs {
    raw_with(stack, user, &[], recv_buffer).await
}

/// A raw connection for `user` on gateway 0 with `extra` headers, past its `welcome`.
pub async fn raw_welcomed(stack: &Stack, user: &str, extra: &[(&str, &str)]) -> RawWs {
    raw_with(stack, user, extra, None).await
}

async fn raw_with(
    stack: &Stack,
    user: &str,
    extra: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> RawWs {
    let mut ws = RawWs::open(
        stack.gateway_addr(0),
        &Connect::token(stack.token(user)),
        extra,
        recv_buffer,
    )
    .await
    .unwrap_or_else(|e| panic!("{user}: raw upgrade: {e:#}"));
    assert_eq!(ws.status, 101, "{user}: upgrade answered {}", ws.status);
    match ws.read_frame(WAIT).await {
        RawRead::Frame(f) if f.message().contains("\"welcome\"") => ws,
        other => panic!("{user}: no welcome: {other:?}"),
    }
}

/// One frame as a test writes it: FIN, RSV1, opcode, payload.
pub type Frame<'a> = (bool, bool, u8, &'a [u8]);

/// Writes `frames` in order; stops at the first write that fails (the server may have
/// closed already: the close check that follows says whether it did as it should).
pub async fn send_frames(ws: &mut RawWs, frames: &[Frame<'_>]) -> std::io::Result<()> {
    for &(fin, rsv1, opcode, payload) in frames {
        ws.send_frame(fin, rsv1, opcode, payload).await?;
    }
    Ok(())
}

/// Asserts that the server closes `ws` with `code` within [`WAIT`].
pub async fn assert_closed(ws: &mut RawWs, code: u16, what: &str) {
    assert_eq!(ws.closed_with(WAIT).await, Some(code), "{what}");
}

/// Asserts that the next frame on `ws` is a text whose (inflated) message contains
/// `want`.
pub async fn assert_answered(ws: &mut RawWs, want: &str, what: &str) {
    match ws.read_frame(WAIT).await {
        RawRead::Frame(f) => assert!(f.message().contains(want), "{what}: {}", f.message()),
        other => panic!("{what}: no answer: {other:?}"),
    }
}

/// The code of the close frame that arrives within `within`, other frames skipped;
/// `None` when none does.
pub async fn close_within(ws: &mut RawWs, within: Duration) -> Option<u16> {
    match ws.close_within(within).await {
        RawRead::Frame(f) => f.close_code(),
        RawRead::Eof | RawRead::Timeout => None,
    }
}

/// Gateway 0's count of connections it closed with `code`.
pub async fn closed_counter(stack: &Stack, code: &str) -> f64 {
    counter(
        stack,
        &format!("warren_gateway_connections_closed_total{{code=\"{code}\"}}"),
    )
    .await
}

/// A sample of gateway 0's `/metrics`, 0 when absent.
pub async fn counter(stack: &Stack, key: &str) -> f64 {
    sample(&metrics(stack, 0).await, key)
}

/// Waits (up to [`CONVERGE`]) until gateway 0's counter `key` reaches `at_least`.
pub async fn counter_reaches(stack: &Stack, key: &str, at_least: f64) {
    eventually(&format!("{key} reaches {at_least}"), CONVERGE, || async {
        let value = counter(stack, key).await;
        if value >= at_least {
            Ok(())
        } else {
            Err(format!("{key} = {value}"))
        }
    })
    .await;
}
