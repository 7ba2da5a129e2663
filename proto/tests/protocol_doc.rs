//! docs/PROTOCOL.md and this crate name the same things: every frame type, error code,
//! close code, refusal and routing-key kind that `proto` defines is in the document's
//! tables, and every one the tables list is in `proto`. The tables are read as the
//! document writes them (the first column's code spans), so a name the document gains
//! or loses without the code fails here, and the other way round.

use std::collections::BTreeSet;

use warren_proto::amqp::{EventBody, KEY_SCOPES, ROOM, USER};
use warren_proto::client::ClientBody;
use warren_proto::codes::{close, refusal, ErrorCode};
use warren_proto::server::ServerBody;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows (cells, header and rule left out) of the first table after the first line
/// that starts with `marker`.
fn table_after(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(marker));
    assert!(lines.next().is_some(), "docs/PROTOCOL.md has no {marker:?}");
    let rows: Vec<Vec<String>> = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "no table after {marker:?}");
    rows[2..].to_vec()
}

/// The `code spans` of a piece of Markdown.
fn spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The first code span of each row's first cell.
fn first_column(doc: &str, marker: &str) -> BTreeSet<String> {
    table_after(doc, marker)
        .iter()
        .map(|row| {
            spans(&row[0])
                .into_iter()
                .next()
                .unwrap_or_else(|| row[0].clone())
        })
        .collect()
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names.into_iter().map(str::to_owned).collect()
}

#[test]
fn client_frame_types_match() {
    assert_eq!(
        first_column(&doc(), "### Client to server"),
        set(ClientBody::TYPES)
    );
}

#[test]
fn server_frame_types_match() {
    assert_eq!(
        first_column(&doc(), "### Server to client"),
        set(ServerBody::TYPES)
    );
}

#[test]
fn error_codes_match() {
    assert_eq!(
        first_column(&doc(), "## Error codes"),
        set(ErrorCode::ALL.map(ErrorCode::as_str))
    );
}

#[test]
fn close_codes_match() {
    let listed: BTreeSet<u16> = table_after(&doc(), "## Close codes")
        .iter()
        .map(|row| {
            row[0]
                .parse()
                .unwrap_or_else(|_| panic!("close code {row:?}"))
        })
        .collect();
    assert_eq!(listed, close::ALL.into_iter().collect());
}

#[test]
fn refusals_match() {
    let listed: BTreeSet<String> = table_after(&doc(), "**Refusals.**")
        .iter()
        .flat_map(|row| spans(&row[1]))
        .collect();
    assert_eq!(listed, set(refusal::ALL));
}

#[test]
fn command_kinds_are_the_client_frames_but_ping() {
    let doc = doc();
    let line = doc
        .lines()
        .find(|l| l.starts_with("Command kinds:"))
        .expect("docs/PROTOCOL.md lists the command kinds");
    // The sentence runs on to the next line; its spans up to the period are the kinds.
    let at = doc.find(line).unwrap();
    let sentence = &doc[at..at + doc[at..].find(". ").unwrap()];
    let mut kinds = set(ClientBody::TYPES);
    kinds.remove("ping");
    assert_eq!(spans(sentence).into_iter().collect::<BTreeSet<_>>(), kinds);
}

#[test]
fn routing_key_kinds_match() {
    let rows = table_after(&doc(), "**Routing keys.**");
    let scope = |row: &Vec<String>| {
        let key = spans(&row[0]).into_iter().next().unwrap_or_default();
        key.split('.').next().unwrap_or_default().to_owned()
    };
    let scopes: BTreeSet<String> = rows.iter().map(scope).collect();
    assert_eq!(scopes, set(KEY_SCOPES));
    for row in &rows {
        let kinds: BTreeSet<String> = spans(&row[2]).into_iter().collect();
        match scope(row).as_str() {
            // Every event kind goes to its room.
            s if s == ROOM => assert_eq!(kinds, set(EventBody::KINDS)),
            // Some go to users as well; none that is not an event.
            s if s == USER => {
                assert!(!kinds.is_empty() && kinds.is_subset(&set(EventBody::KINDS)))
            }
            other => assert!(kinds.is_empty(), "{other} keys carry no kind: {kinds:?}"),
        }
    }
    // An event becomes the client frame of the same name.
    assert!(set(EventBody::KINDS).is_subset(&set(ServerBody::TYPES)));
}
