//! The command line: `loadgen MODE --key value ...`.
//!
//! A hand-written parser instead of a crate, to keep the load generator's dependencies
//! to what it measures with. Every option is `--name value`, except that an option
//! followed by another option (or by nothing) is a switch: `--deflate` is `--deflate
//! true`. An option given twice keeps the last value; an option that no mode reads is an
//! error, so a typo never silently runs the default.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::Error;

pub struct Args {
    pub mode: String,
    values: BTreeMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl Args {
    /// Parses `argv` without the program name.
    pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, Error> {
        let mut argv = argv.into_iter().peekable();
        let mode = argv
            .next()
            .ok_or_else(|| Error::from("missing MODE (try `loadgen help`)"))?;
        let mut values = BTreeMap::new();
        while let Some(flag) = argv.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| Error::from(format!("expected --option, got {flag:?}")))?;
            if name.is_empty() {
                return Err(Error::from("expected --option, got \"--\""));
            }
            let value = match argv.peek() {
                Some(next) if !next.starts_with("--") => argv.next().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            values.insert(name.to_owned(), value);
        }
        Ok(Args {
            mode,
            values,
            read: RefCell::new(BTreeSet::new()),
        })
    }

    /// `--name` parsed as `T`, or `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| Error::from(format!("--{name} {v:?}: {e}"))),
        }
    }

    /// `--name` as a string, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_owned()
    }

    /// `--name` as a comma-separated list (empty items dropped), or `default`.
    pub fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.raw(name) {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// `--name` as `label=value` pairs separated by commas (`gw0=123,redis=45`); an item
    /// without `=` is labelled by itself.
    pub fn labelled(&self, name: &str) -> Vec<(String, String)> {
        self.list(name, &[])
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((label, value)) => (label.to_owned(), value.to_owned()),
                None => (item.clone(), item),
            })
            .collect()
    }

    /// Fails on any option that was given but never read.
    pub fn finish(&self) -> Result<(), Error> {
        let read = self.read.borrow();
        let unknown: Vec<&String> = self.values.keys().filter(|k| !read.contains(*k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::from(format!(
                "unknown option(s) for mode {}: {}",
                self.mode,
                unknown
                    .iter()
                    .map(|k| format!("--{k}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )))
        }
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().insert(name.to_owned());
        self.values.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::parse(line.split_whitespace().map(str::to_owned)).unwrap()
    }

    #[test]
    fn values_defaults_and_lists() {
        let a = args("fanout --receivers 10 --url a,b, --cpu-pids gw0=1,2");
        assert_eq!(a.mode, "fanout");
        assert_eq!(a.get("receivers", 1000usize).unwrap(), 10);
        assert_eq!(a.get("senders", 7usize).unwrap(), 7);
        assert_eq!(a.list("url", &[]), vec!["a", "b"]);
        assert_eq!(
            a.labelled("cpu-pids"),
            vec![("gw0".into(), "1".into()), ("2".into(), "2".into())]
        );
        a.finish().unwrap();
    }

    #[test]
    fn an_unread_option_is_an_error() {
        let a = args("idle --conns 5 --conn 6");
        assert_eq!(a.get("conns", 0usize).unwrap(), 5);
        assert!(a.finish().unwrap_err().to_string().contains("--conn"));
    }

    #[test]
    fn an_option_without_a_value_is_a_switch() {
        let a = args("fanout --deflate --receivers 3 --quiet");
        assert!(a.get("deflate", false).unwrap());
        assert!(a.get("quiet", false).unwrap());
        assert_eq!(a.get("receivers", 0usize).unwrap(), 3);
        let b = args("fanout --deflate false --rate -1");
        assert!(!b.get("deflate", true).unwrap());
        assert_eq!(b.get("rate", 0i32).unwrap(), -1);
    }

    #[test]
    fn a_bad_number_names_the_option() {
        let a = args("idle --conns many");
        let e = a.get("conns", 0usize).unwrap_err().to_string();
        assert!(e.contains("--conns"), "{e}");
    }
}
