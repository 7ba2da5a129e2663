//! A reader that stops reading: cut off with 1013 while the room keeps receiving, and
//! what it finds when it reads again.

use std::time::Duration;

use serde_json::{json, Value};
use warren_tests::client::Recv;
use warren_tests::hostile_support::{
    assert_still_serves, metrics, sample, RawFrame, RawRead, RawWs,
};
use warren_tests::Stack;

use crate::support::{closed_counter, counter, one_gateway, raw, WAIT};

/// A raw connection for `user` with a 4 KiB receive buffer, joined to `room`: from here
/// on the test decides when it reads.
async fn raw_joined(stack: &Stack, user: &str, room: &str) -> RawWs {
    let mut ws = raw(stack, user, Some(4096)).await;
    ws.send_text(&json!({"type": "join", "room": room, "ref": user}).to_string())
        .await
        .unwrap();
    let joined = format!(r#""ref":"{user}""#);
    loop {
        match ws.read_frame(WAIT).await {
            RawRead::Frame(f) if f.text().contains(&joined) => return ws,
            RawRead::Frame(_) => {}
            other => panic!("{user}: no joined: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_in_a_200_member_room_is_cut_off_and_the_others_keep_receiving() {
    const ROOM: &str = "crowd";
    const READERS: usize = 199;
    const MAX_MESSAGES: usize = 1000;
    const AFTER_CUT: usize = 20;
    let stack = one_gateway(
        "gateway.outbound_queue=32 gateway.max_text_bytes=16384 presence.max_event_members=10",
    )
    .await;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut c = stack.connect(0, &format!("reader{i}")).await;
        c.join(ROOM).await;
        readers.push(c);
    }
    let mut stalled = raw_joined(&stack, "stalled", ROOM).await;
    // From here on the stalled client reads nothing.
    let mut sender = readers.pop().expect("readers");
    let receiving: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                loop {
                    match c.try_recv(Duration::from_secs(30)).await {
                        Recv::Frame(v) if v["type"] == "message" && v["room"] == ROOM => {
                            seqs.push(v["seq"].as_u64().expect("seq"));
                            if v["text"].as_str().is_some_and(|t| t.starts_with("end")) {
                                return (c.label.clone(), seqs, None);
                            }
                        }
                        Recv::Frame(_) => {}
                        other => return (c.label.clone(), seqs, Some(format!("{other:?}"))),
                    }
                }
            })
        })
        .collect();

    let pad = "m".repeat(16_000);
    let mut acked = Vec::new();
    let mut cut_at = None;
    while acked.len() < MAX_MESSAGES {
        let last = cut_at.is_some_and(|at| acked.len() + 1 >= at + AFTER_CUT);
        let text = if last {
            format!("end {pad}")
        } else {
            format!("{} {pad}", acked.len())
        };
        acked.push(sender.send_acked(ROOM, &text).await.seq);
        if last {
            break;
        }
        if cut_at.is_none() && acked.len() % 10 == 0 && closed_counter(&stack, "1013").await >= 1.0
        {
            cut_at = Some(acked.len());
        }
    }
    let cut_at = cut_at.expect("the stalled reader was never cut off");
    eprintln!(
        "stalled reader cut off after {cut_at} messages of 16 KB; {} sent",
        acked.len()
    );

    for task in receiving {
        let (label, seqs, problem) = task.await.expect("reader task");
        assert_eq!(
            problem,
            None,
            "{label} stopped receiving after {} messages",
            seqs.len()
        );
        assert_eq!(seqs, acked, "{label} got every message, in order");
    }
    let m = metrics(&stack, 0).await;
    assert_eq!(
        sample(&m, "warren_gateway_slow_consumers_total"),
        1.0,
        "only the stalled reader"
    );
    assert_eq!(
        sample(&m, "warren_gateway_connections_closed_total{code=\"1013\"}"),
        1.0
    );
    // Its connection ends, whether or not it took its close frame in time.
    assert!(
        stalled.read_to_end(Duration::from_secs(60)).await.is_some(),
        "the stalled connection ends"
    );
    sender.close().await;
    assert_still_serves(&stack, 0, "after-stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cut_off_for_not_reading_finds_1013_when_it_reads_again() {
    const ROOM: &str = "backlog";
    const MAX_MESSAGES: usize = 1000;
    let stack = one_gateway(
        "gateway.outbound_queue=32 gateway.max_text_bytes=16384 gateway.close_timeout_s=30",
    )
    .await;
    let mut slow = raw_joined(&stack, "paused", ROOM).await;
    let mut sender = stack.connect(0, "talker").await;
    sender.join(ROOM).await;

    // The paused client reads nothing until the gateway has cut it off.
    let pad = "m".repeat(16_000);
    let mut acked = Vec::new();
    loop {
        let seq = sender
            .send_acked(ROOM, &format!("{} {pad}", acked.len()))
            .await
            .seq;
        acked.push(seq);
        if acked.len() % 10 == 0
            && counter(&stack, "warren_gateway_slow_consumers_total").await >= 1.0
        {
            break;
        }
        assert!(
            acked.len() < MAX_MESSAGES,
            "the paused client was never cut off"
        );
    }

    // It reads again: what was on its way, whole frames in order, then the close.
    let frames: Vec<RawFrame> = slow
        .read_to_end(WAIT)
        .await
        .expect("the connection ends once the close frame is read");
    let (close, before) = frames.split_last().expect("frames");
    assert_eq!(
        close.close_code(),
        Some(1013),
        "the last frame is the close; got {} frames, the last {:?}",
        frames.len(),
        close.text().chars().take(80).collect::<String>()
    );
    let seqs: Vec<u64> = before
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(&f.message()).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    assert!(!seqs.is_empty(), "what was on its way arrives first");
    assert_eq!(
        seqs,
        acked[..seqs.len()],
        "the messages before the close are the first ones sent, in order"
    );
    eprintln!(
        "cut off after {} messages of 16 KB; {} were on their way, then 1013",
        acked.len(),
        seqs.len()
    );
    sender.close().await;
    assert_still_serves(&stack, 0, "after-pause").await;
}
