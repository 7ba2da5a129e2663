//! The OpenTelemetry exporter (cargo feature `otlp`) against a stand-in collector: a
//! real HTTP listener on 127.0.0.1 that takes the OTLP/HTTP POSTs. A span continuing a
//! `traceparent` reaches it under that trace id, with the header's span as its parent
//! and the span id the hop hands on: the ids in logs, headers and the collector agree.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use warren_common::hop_span;
use warren_common::settings::{LogSettings, TraceSettings};
use warren_common::trace::{self, TraceParent};

/// One request the stand-in collector took: its request line, headers and body.
struct Request {
    head: String,
    body: Vec<u8>,
}

/// Answers every POST with 200 and an empty body (an empty export response), and
/// hands each request over. Bounded: at most 16 connections.
fn collector() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            // Requests on one kept-alive connection, one after the other.
            for _ in 0..16 {
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if stream.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                if tx.send(Request { head, body }).is_err() {
                    return;
                }
            }
        }
    });
    (format!("http://{addr}"), rx)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn exported_spans_carry_the_traceparents_ids() {
    let (endpoint, requests) = collector();
    let log = LogSettings {
        level: "info".into(),
        format: "text".into(),
    };
    let settings = TraceSettings {
        otlp_endpoint: endpoint,
        service_name: "warren-otlp-test".into(),
    };
    let telemetry = warren_common::telemetry::init_service(&log, &settings, "unused");

    let incoming =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let span = hop_span!("dispatch", kind = "send");
    let hop = trace::enter(&span, Some(incoming));
    assert_eq!(hop.trace_id, incoming.trace_id, "the trace goes on");
    assert_ne!(
        hop.parent_id, incoming.parent_id,
        "this hop is a span of its own"
    );
    drop(span);
    // Shutting the exporter down sends what is batched.
    drop(telemetry);

    let request = requests
        .recv_timeout(Duration::from_secs(20))
        .expect("the collector received an export");
    assert!(
        request.head.starts_with("POST /v1/traces "),
        "{}",
        request.head
    );
    let body = &request.body;
    assert!(contains(body, &incoming.trace_id), "the header's trace id");
    assert!(
        contains(body, &incoming.parent_id),
        "the header's span as the parent span id"
    );
    assert!(
        contains(body, &hop.parent_id),
        "the span id this hop hands on in its own traceparent"
    );
    assert!(contains(body, b"dispatch"), "the span's name");
    assert!(contains(body, b"warren-otlp-test"), "the service name");
}
