//! How results are printed: aligned tables for people, JSON for scripts.

use serde::Serialize;

/// A table: a header and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, each column as wide as its widest cell.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = vec![line(&self.header)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// Prints `value` as JSON when `json`, else as `text` renders it.
pub fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("warren-admin: encoding the output: {e}"),
        }
    } else {
        println!("{}", text(value));
    }
}

/// A unix-ms time relative to `now_ms`, as people read it in a table: `in 9m`,
/// `3h ago`; `-` for none (a permanent mute or ban). JSON keeps the milliseconds.
pub fn time(ms: Option<u64>, now_ms: u64) -> String {
    let Some(ms) = ms else {
        return "-".to_owned();
    };
    let span = |secs: u64| match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if ms >= now_ms {
        format!("in {}", span((ms - now_ms) / 1000))
    } else {
        format!("{} ago", span((now_ms - ms) / 1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new(&["room", "members"]);
        t.row(vec!["general".into(), "3".into()]);
        t.row(vec!["x".into(), "12".into()]);
        assert_eq!(t.render(), "room     members\ngeneral  3\nx        12");
    }

    #[test]
    fn times_read_relative_to_now() {
        let now = 1_000_000_000;
        assert_eq!(time(Some(now + 90_000), now), "in 90s");
        assert_eq!(time(Some(now + 600_000), now), "in 10m");
        assert_eq!(time(Some(now - 3 * 3_600_000), now), "3h ago");
        assert_eq!(time(Some(now + 3 * 86_400_000), now), "in 3d");
        assert_eq!(time(None, now), "-");
    }
}
