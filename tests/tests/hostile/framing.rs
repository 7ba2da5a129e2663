//! Frames a server must refuse or put together: oversized messages and fragments
//! (1009), binary (1003), invalid UTF-8 (1007, at its first byte), malformed JSON.

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use warren_tests::hostile_support::{assert_still_serves, deflate, encode_client_frame, opcode};

use crate::support::{
    assert_answered, assert_closed, close_within, closed_counter, one_gateway, raw, raw_welcomed,
    send_frames, Frame, AT_ONCE, DEFLATE_OFFER, WAIT,
};

use opcode::{CONTINUATION, TEXT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_messages_close_with_1009() {
    let stack = one_gateway("gateway.max_frame_bytes=4096").await;

    let mut big = stack.connect(0, "big").await;
    big.send_text(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(5000)
    ))
    .await;
    assert_eq!(big.closed_with(WAIT).await, Some(1009), "one large frame");

    // Fragments under the limit are put back together and read as one frame...
    let mut parts = raw(&stack, "fragments", None).await;
    let ping = br#"{"type":"ping","ref":"frag"}"#;
    let fragments = [
        (false, false, TEXT, &ping[..10]),
        (false, false, CONTINUATION, &ping[10..20]),
        (true, false, CONTINUATION, &ping[20..]),
    ];
    send_frames(&mut parts, &fragments).await.unwrap();
    assert_answered(&mut parts, r#""ref":"frag""#, "a fragmented ping").await;
    // ...and a message whose fragments add up past the limit closes with 1009, though
    // each fragment is small.
    let chunk = vec![b' '; 3000];
    let fragments = [
        (false, false, TEXT, &chunk[..]),
        (false, false, CONTINUATION, &chunk),
    ];
    send_frames(&mut parts, &fragments).await.ok();
    assert_closed(&mut parts, 1009, "fragmented message").await;

    assert_still_serves(&stack, 0, "after-big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_invalid_utf8_and_malformed_frames_get_their_codes() {
    let stack = one_gateway("").await;

    let mut binary = stack.connect(0, "binary").await;
    binary.send_ws(WsMessage::binary(vec![0x7b, 0x7d])).await;
    assert_eq!(binary.closed_with(WAIT).await, Some(1003), "binary frame");

    let mut utf8 = raw(&stack, "utf8", None).await;
    let bad = b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}";
    send_frames(&mut utf8, &[(true, false, TEXT, bad)])
        .await
        .unwrap();
    assert_closed(&mut utf8, 1007, "invalid UTF-8").await;

    // A multi-byte character split across two fragments is valid; a truncated one is not.
    let mut split = raw(&stack, "utf8-split", None).await;
    let text = "{\"type\":\"ping\",\"ref\":\"é\"}".as_bytes();
    let cut = text.iter().position(|b| *b == 0xc3).unwrap() + 1;
    let fragments = [
        (false, false, TEXT, &text[..cut]),
        (true, false, CONTINUATION, &text[cut..]),
    ];
    send_frames(&mut split, &fragments).await.unwrap();
    assert_answered(&mut split, "pong", "a split character").await;
    let fragments = [
        (false, false, TEXT, &text[..cut]),
        (true, false, CONTINUATION, &[][..]),
    ];
    send_frames(&mut split, &fragments).await.unwrap();
    assert_closed(&mut split, 1007, "truncated character").await;

    let mut bad = stack.connect(0, "malformed").await;
    bad.send_text("not json at all").await;
    let first = bad.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{first}"
    );
    bad.send_frame(json!({"type": "explode", "ref": "u1"}))
        .await;
    let second = bad.recv().await;
    assert_eq!(second["code"], "unknown_type", "{second}");
    assert_eq!(second["ref"], "u1", "{second}");
    // An unknown type is a newer client's, not a bad frame: it is no strike.
    for (kind, r#ref) in [("send", "m1"), ("join", "j1")] {
        bad.send_frame(json!({"type": kind, "ref": r#ref})).await;
        let answer = bad.recv().await;
        assert_eq!(
            (answer["code"].as_str(), answer["ref"].as_str()),
            (Some("bad_request"), Some(r#ref)),
            "{answer}"
        );
    }
    assert_eq!(
        bad.closed_with(WAIT).await,
        Some(1008),
        "third malformed frame in 10 s"
    );

    assert_still_serves(&stack, 0, "after-malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007_at_its_first_byte_not_at_the_end_of_the_message() {
    let stack = one_gateway("").await;
    let start = b"{\"type\":\"ping\",\"ref\":\"";

    // Each case: a connection (compressed or not), the frames it sends, and what they are.
    let bad_first = [&start[..], b"\xff"].concat();
    let maybe_char = [&start[..], b"\xf4"].concat();
    let surrogate = deflate(&[&start[..], b"\xed\xa0\x80"].concat());
    let cases: [(&str, bool, Vec<Frame>, &str); 3] = [
        // A first fragment with a bad byte, and no other fragment ever.
        (
            "utf8-fragment",
            false,
            vec![(false, false, TEXT, &bad_first)],
            "a bad first fragment",
        ),
        // A character that may be one (`F4`) at the end of a fragment, and the byte
        // that makes it none (`90`, past U+10FFFF) in the next (Autobahn 6.4.2).
        (
            "utf8-cut",
            false,
            vec![
                (false, false, TEXT, &maybe_char),
                (false, false, CONTINUATION, b"\x90\x80\x80"),
            ],
            "an impossible character across fragments",
        ),
        // Compressed: the inflated text is checked as it inflates.
        (
            "utf8-deflate",
            true,
            vec![(false, true, TEXT, &surrogate)],
            "a compressed first fragment that inflates to a surrogate",
        ),
    ];
    for (user, compressed, frames, what) in cases {
        let extra: &[(&str, &str)] = if compressed { &DEFLATE_OFFER } else { &[] };
        let mut ws = raw_welcomed(&stack, user, extra).await;
        send_frames(&mut ws, &frames).await.unwrap();
        assert_eq!(close_within(&mut ws, AT_ONCE).await, Some(1007), "{what}");
    }

    // One frame whose bytes stop coming after the bad one (Autobahn 6.4.3).
    let mut partial = raw(&stack, "utf8-partial", None).await;
    let payload = [&start[..], b"\xc0\xaf", &[b'x'; 200]].concat();
    let bytes = encode_client_frame(true, false, TEXT, &payload, rand::random());
    partial.stream.write_all(&bytes[..40]).await.unwrap();
    assert_eq!(
        close_within(&mut partial, AT_ONCE).await,
        Some(1007),
        "a frame cut after its bad byte"
    );

    // Valid text cut anywhere, compressed or not, is still read whole.
    let mut good = raw_welcomed(&stack, "utf8-good", &DEFLATE_OFFER).await;
    let ping = "{\"type\":\"ping\",\"ref\":\"κόσμε-𝄞\"}".as_bytes();
    let squeezed = deflate(ping);
    for (compressed, data) in [(false, ping), (true, &squeezed[..])] {
        for cut in [1, data.len() / 2, data.len() - 1] {
            let fragments = [
                (false, compressed, TEXT, &data[..cut]),
                (true, false, CONTINUATION, &data[cut..]),
            ];
            send_frames(&mut good, &fragments).await.unwrap();
            let what = format!("compressed {compressed}, cut {cut}");
            assert_answered(&mut good, "κόσμε-𝄞", &what).await;
        }
    }
    let bye = 1000u16.to_be_bytes();
    send_frames(&mut good, &[(true, false, opcode::CLOSE, &bye)])
        .await
        .unwrap();

    assert_eq!(closed_counter(&stack, "1007").await, 4.0);
    assert_still_serves(&stack, 0, "after-utf8").await;
}
