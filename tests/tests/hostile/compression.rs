//! permessage-deflate from a hostile client: RSV1 without an agreed extension (1002),
//! compression bombs (1009), bytes that are not deflate (1007).

use warren_tests::hostile_support::{assert_still_serves, deflate, inflate, opcode};

use crate::support::{
    assert_answered, assert_closed, closed_counter, one_gateway, raw_welcomed, send_frames, Frame,
    DEFLATE_AGREED, DEFLATE_OFFER,
};

use opcode::{CONTINUATION, TEXT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_frame_without_an_agreed_extension_closes_with_1002() {
    // A "compressed" frame of 60 KB of deflate stream: refused on its header, never
    // inflated.
    let mut bomb = vec![0x78, 0x9c];
    bomb.extend(std::iter::repeat_n(0u8, 60_000));
    // No offer; and an offer to a gateway with compression turned off, which ignores
    // it, so that RSV1 is as wrong.
    for (offered, what, after) in [
        (false, "RSV1, no offer", "after-zipper"),
        (true, "RSV1, declined", "after-declined"),
    ] {
        let (offer, compression): (&[_], _) = if offered {
            (&DEFLATE_OFFER, "false")
        } else {
            (&[], "true")
        };
        let stack = one_gateway(&format!("gateway.compression={compression}")).await;
        let mut ws = raw_welcomed(&stack, "zipper", offer).await;
        assert_eq!(ws.header("sec-websocket-extensions"), None, "{what}");
        send_frames(&mut ws, &[(true, true, TEXT, &bomb)])
            .await
            .unwrap();
        assert_closed(&mut ws, 1002, what).await;
        assert_still_serves(&stack, 0, after).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_that_inflate_past_max_frame_bytes_close_with_1009() {
    let stack = one_gateway("").await;
    let max = 65_536;

    // 10 MiB of spaces in a send: about 10 KB on the wire, far under max_frame_bytes,
    // and 160 times over it once inflated. The gateway stops inflating at the limit.
    let text = format!(
        r#"{{"type":"send","room":"r","ref":"b","text":"{}"}}"#,
        " ".repeat(10 << 20)
    );
    let bomb = deflate(text.as_bytes());
    assert!(bomb.len() < max / 2, "{} bytes on the wire", bomb.len());
    // The first fragment is the stream's first two bytes, which inflate to next to
    // nothing: the gateway inflates as fragments arrive, so a first fragment that
    // already overflowed could close the connection while the test still writes the
    // second (a broken pipe, not the 1009 under test).
    let (head, tail) = bomb.split_at(2);
    assert!(
        inflate(head).len() < max,
        "the first fragment alone overflows"
    );
    let half = deflate(br#"{"type":"ping"}"#);
    let cases: [(&str, Vec<Frame>, u16, &str); 4] = [
        (
            "bomber",
            vec![(true, true, TEXT, &bomb)],
            1009,
            "inflates past the limit",
        ),
        // The same bomb in fragments: the limit is on the whole message.
        (
            "bomber2",
            vec![(false, true, TEXT, head), (true, false, CONTINUATION, tail)],
            1009,
            "fragmented bomb",
        ),
        // Bytes that are not a deflate stream.
        (
            "garbler",
            vec![(true, true, TEXT, &[0xFF, 0xFF, 0xFF, 0xFF])],
            1007,
            "not deflate",
        ),
        // RSV1 belongs on a message's first frame only.
        (
            "misflagger",
            vec![
                (false, true, TEXT, &half[..1]),
                (true, true, CONTINUATION, &half[1..]),
            ],
            1002,
            "RSV1 on a continuation",
        ),
    ];
    for (user, frames, code, what) in cases {
        let mut ws = raw_welcomed(&stack, user, &DEFLATE_OFFER).await;
        assert_eq!(ws.header("sec-websocket-extensions"), Some(DEFLATE_AGREED));
        send_frames(&mut ws, &frames).await.unwrap();
        assert_closed(&mut ws, code, what).await;
    }

    // A compressed message just under the limit is read and answered.
    let mut ws = raw_welcomed(&stack, "honest", &DEFLATE_OFFER).await;
    let pad = " ".repeat(max - 64);
    let ping = format!(r#"{{"type":"ping","ref":"big"{pad}}}"#);
    assert!(ping.len() <= max);
    let packed = deflate(ping.as_bytes());
    send_frames(&mut ws, &[(true, true, TEXT, &packed)])
        .await
        .unwrap();
    assert_answered(&mut ws, r#""ref":"big""#, "a message just under the limit").await;

    assert_eq!(closed_counter(&stack, "1009").await, 2.0);
    assert_still_serves(&stack, 0, "after-bombs").await;
}
