//! The word list: which messages the moderation bot deletes.
//!
//! A listed word matches a whole word of the text, case-insensitively: the text is cut
//! at every character that is not a letter or a digit, so `Heck!` and `heck-ish` match
//! `heck`, and `heckle` does not. Listed words are therefore letters and digits only.

use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct WordList {
    words: HashSet<String>,
}

impl WordList {
    /// A list of at least one word, each letters and digits only.
    pub fn new<S: AsRef<str>>(words: &[S]) -> Result<WordList, String> {
        let mut set = HashSet::new();
        for word in words {
            let word = word.as_ref().trim();
            if word.is_empty() || !word.chars().all(char::is_alphanumeric) {
                return Err(format!(
                    "{word:?} is not one word of letters and digits (phrases are not supported)"
                ));
            }
            set.insert(word.to_lowercase());
        }
        if set.is_empty() {
            return Err("the list is empty; give at least one word".into());
        }
        Ok(WordList { words: set })
    }

    /// The first listed word in `text`, as listed (lower case).
    pub fn first_match(&self, text: &str) -> Option<&str> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|token| !token.is_empty())
            .find_map(|token| self.words.get(&token.to_lowercase()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> WordList {
        WordList::new(&["heck", "Darn", "ÉCLAIR"]).unwrap()
    }

    #[test]
    fn whole_words_match_in_any_case() {
        let l = list();
        assert_eq!(l.first_match("what the HECK"), Some("heck"));
        assert_eq!(l.first_match("heck!"), Some("heck"));
        assert_eq!(l.first_match("(darn) it"), Some("darn"));
        assert_eq!(l.first_match("heck-ish"), Some("heck"));
        assert_eq!(l.first_match("un éclair"), Some("éclair"));
    }

    #[test]
    fn parts_of_words_do_not_match() {
        let l = list();
        for text in ["heckle", "checks", "darned", "", "   ", "h e c k"] {
            assert_eq!(l.first_match(text), None, "{text:?}");
        }
    }

    #[test]
    fn only_single_words_can_be_listed() {
        assert!(WordList::new::<&str>(&[]).is_err());
        assert!(WordList::new(&["two words"]).is_err());
        assert!(WordList::new(&["dot."]).is_err());
        assert!(WordList::new(&[""]).is_err());
        assert!(WordList::new(&[" padded "]).is_ok());
    }
}
