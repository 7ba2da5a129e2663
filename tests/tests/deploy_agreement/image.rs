//! `deploy/Dockerfile` and `.dockerignore` against the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::compose::{port_of, Compose};
use crate::{read, repo, rx, Problems};

/// `.dockerignore`'s patterns as regular expressions over paths.
pub(crate) fn ignore_rx(pattern: &str) -> Regex {
    let pattern = pattern.trim_matches('/');
    let mut out = String::from("^");
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        let (piece, len) = if rest.starts_with("**/") {
            ("(?:.*/)?".to_owned(), 3)
        } else if rest.starts_with("**") {
            (".*".to_owned(), 2)
        } else if c == '*' {
            ("[^/]*".to_owned(), 1)
        } else if c == '?' {
            ("[^/]".to_owned(), 1)
        } else {
            (regex::escape(&c.to_string()), c.len_utf8())
        };
        out.push_str(&piece);
        rest = &rest[len..];
    }
    rx(&(out + "(?:/.*)?$"))
}

/// The Dockerfile builds every binary on a rust image into a non-root debian runtime
/// that exposes the services' ports and carries the health probe; `.dockerignore`
/// keeps what the build needs and leaves out `target/` and `.git/`.
pub(crate) fn check_image(c: &Compose, p: &mut Problems) {
    let dockerfile = read("deploy/Dockerfile");
    let args: BTreeMap<String, String> = rx(r"(?m)^ARG\s+(\w+)=(\S+)")
        .captures_iter(&dockerfile)
        .map(|m| (m[1].to_owned(), m[2].to_owned()))
        .collect();
    let arg = rx(r"\$\{(\w+)\}");
    let images: Vec<String> = rx(r"(?mi)^FROM\s+(\S+)")
        .captures_iter(&dockerfile)
        .map(|m| {
            arg.replace_all(&m[1], |a: &regex::Captures| {
                args.get(&a[1]).cloned().unwrap_or_else(|| a[0].to_owned())
            })
            .into_owned()
        })
        .collect();
    p.check(
        images.len() >= 2
            && images[0].starts_with("rust:")
            && images.last().is_some_and(|i| i.starts_with("debian:bookworm")),
        || format!("Dockerfile: expected a rust: build stage and a debian:bookworm runtime, found {images:?}"),
    );
    p.check(
        dockerfile.contains("cargo build --release --locked --bins"),
        || "Dockerfile: the build does not run `cargo build --release --locked --bins`".to_owned(),
    );
    p.check(
        rx(r"--mount=type=cache,[^\n]*target=/usr/local/cargo/registry").is_match(&dockerfile),
        || "Dockerfile: no cache mount for the cargo registry".to_owned(),
    );
    let user = rx(r"(?m)^USER\s+(\S+)")
        .captures_iter(&dockerfile)
        .last()
        .map(|m| m[1].split(':').next().unwrap_or("").to_owned());
    p.check(
        user.as_deref().is_some_and(|u| u != "root" && u != "0"),
        || "Dockerfile: the runtime does not run as a non-root USER".to_owned(),
    );
    let exposed: BTreeSet<String> = rx(r"(?m)^EXPOSE\s+(.*)$")
        .captures_iter(&dockerfile)
        .flat_map(|m| {
            rx(r"\d+")
                .find_iter(&m[1])
                .map(|d| d.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let gateways = c.gateways();
    for svc in c.warren_services() {
        let section = if gateways.contains(&svc) {
            "gateway"
        } else {
            "dispatcher"
        };
        let port = port_of(&c.setting(&svc, section, "listen").unwrap_or_default()).1;
        p.check(
            port.is_some_and(|port| exposed.contains(&port.to_string())),
            || format!("Dockerfile: EXPOSE lacks {port:?} ({svc})"),
        );
    }
    p.check(
        rx(r"(?m)^COPY --chmod=0755 <<'PROBE' /usr/local/bin/warren-probe$").is_match(&dockerfile),
        || "Dockerfile: the warren-probe here-document was not found".to_owned(),
    );

    let rules: Vec<(bool, Regex)> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| (l.starts_with('!'), ignore_rx(l.trim_start_matches('!'))))
        .collect();
    let ignored = |path: &str| {
        rules.iter().fold(
            false,
            |was, (negate, re)| if re.is_match(path) { !negate } else { was },
        )
    };
    let workspace: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = workspace["workspace"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let include = rx(r#"include_(?:str|bytes)!\(\s*"([^"]+)""#);
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    let root = repo().canonicalize().expect("the repository");
    for member in members.iter().filter_map(|m| m.as_str()) {
        needed.push(format!("{member}/Cargo.toml"));
        needed.push(format!("{member}/src"));
        for rs in rust_files(&root.join(member)) {
            let text = std::fs::read_to_string(&rs).unwrap_or_default();
            for m in include.captures_iter(&text) {
                let target = rs.parent().unwrap().join(&m[1]);
                match target
                    .canonicalize()
                    .ok()
                    .and_then(|t| t.strip_prefix(&root).ok().map(Path::to_path_buf))
                {
                    Some(rel) => needed.push(rel.to_string_lossy().into_owned()),
                    None => p.bad(format!(
                        "{}: include of {} lies outside the build context",
                        rs.display(),
                        &m[1]
                    )),
                }
            }
        }
    }
    for path in needed {
        p.check(!ignored(&path), || {
            format!(".dockerignore excludes {path}, which the build needs")
        });
    }
    for path in ["target", ".git"] {
        p.check(ignored(path), || {
            format!(".dockerignore should exclude {path}/")
        });
    }
}

pub(crate) fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "target" && n != "node_modules")
                {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}
