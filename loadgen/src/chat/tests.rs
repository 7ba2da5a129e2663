//! `chat::run` end to end against a fake Warren on loopback (no broker, no store): with
//! `--retry`, a send refused `unavailable` goes again with the same `ref`, a repeated
//! `ack` is not a second message, and every member is checked message by message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{run, Flavor, Member, Pace, Plan};
use crate::measure::CpuProbe;
use crate::scrape::Scrape;

#[derive(Default)]
struct Room {
    members: Vec<mpsc::UnboundedSender<String>>,
    seq: u64,
    /// Each stored `ref` and its seq: a repeat is answered with the same `ack`.
    stored: HashMap<String, u64>,
    refused_once: HashSet<String>,
}

/// A fake gateway and dispatcher in one: `welcome`; `join` → `joined`; `send` → the
/// first attempt of about every other new `ref` is refused `unavailable`, otherwise the
/// message is stored once per `ref` with the room's next seq, goes to every member, and
/// its `ack` to the sender (twice for every fifth seq).
async fn fake_warren(listener: TcpListener) {
    let rooms: Arc<Mutex<HashMap<String, Room>>> = Arc::default();
    while let Ok((tcp, _)) = listener.accept().await {
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            });
            let _ = tx.send(json!({"type": "welcome"}).to_string());
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                let name = frame["room"].as_str().unwrap_or("").to_owned();
                let mut rooms = rooms.lock().unwrap();
                let room = rooms.entry(name.clone()).or_default();
                match frame["type"].as_str() {
                    Some("join") => {
                        room.members.push(tx.clone());
                        let _ = tx.send(json!({"type": "joined", "room": name}).to_string());
                    }
                    Some("send") => {
                        let r = frame["ref"].as_str().unwrap_or("").to_owned();
                        let seq = match room.stored.get(&r) {
                            Some(seq) => *seq,
                            None if room.seq.is_multiple_of(2)
                                && room.refused_once.insert(r.clone()) =>
                            {
                                let refusal = json!({"type": "error", "code": "unavailable",
                                    "message": "retry", "ref": r});
                                let _ = tx.send(refusal.to_string());
                                continue;
                            }
                            None => {
                                room.seq += 1;
                                room.stored.insert(r.clone(), room.seq);
                                let message = json!({"type": "message", "room": name, "id": "x",
                                    "seq": room.seq, "epoch": "e", "text": frame["text"], "ts": 0,
                                    "from": {"id": "u", "name": "u", "bot": false}})
                                .to_string();
                                for member in &room.members {
                                    let _ = member.send(message.clone());
                                }
                                room.seq
                            }
                        };
                        let ack =
                            json!({"type": "ack", "ref": r, "room": name, "id": "x", "seq": seq})
                                .to_string();
                        if seq.is_multiple_of(5) {
                            let _ = tx.send(ack.clone());
                        }
                        let _ = tx.send(ack);
                    }
                    _ => {}
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_every_member_gets_every_acked_message_once_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(fake_warren(listener));
    // Two rooms of three; the first member of each sends 40 msg/s.
    let members = (0..6)
        .map(|i| Member {
            url: url.clone(),
            user: format!("u{i}"),
            room: format!("r{}", i % 2),
            pace: (i < 2).then_some(Pace::Rate {
                per_sec: 40.0,
                offset: Duration::ZERO,
            }),
            stalled: None,
        })
        .collect();
    let plan = Plan {
        members,
        flavor: Flavor::Warren { secret: "s".into() },
        payload: 64,
        warmup: Duration::from_millis(100),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        drain_cap: Duration::from_secs(10),
        connect_concurrency: 10,
        connect_timeout: Duration::from_secs(5),
        source_ips: Vec::new(),
        cpu: CpuProbe::new(Vec::new(), 100.0).unwrap(),
        metrics_url: None,
        deflate: false,
        window_metrics: Scrape::default(),
        retry: true,
        broker_back_file: None,
        ready_line: false,
    };
    let out = run(plan).await.unwrap();
    let check = &out["members_check"];
    assert_eq!(check["members"], 6, "{check}");
    assert_eq!(check["exactly_once_in_order"], 6, "{check}");
    for key in ["lost", "duplicated", "out_of_order", "unacked_received"] {
        assert_eq!(check[key], 0, "{key}: {check}");
    }
    assert!(
        out["retry"]["retried_unavailable"].as_u64().unwrap() > 0,
        "{}",
        out["retry"]
    );
    assert!(
        out["retry"]["duplicate_acks"].as_u64().unwrap() > 0,
        "{}",
        out["retry"]
    );
    assert!(out["sent"].as_u64().unwrap() > 40);
    assert_eq!(out["sent"], out["accepted"]);
    assert_eq!(
        (out["lost"].clone(), out["drained"].clone()),
        (json!(0), json!(true))
    );
}
