//! The per-room delivery filter that makes "history + live" gap-free and duplicate-free.
//!
//! A room's messages carry `(epoch, seq)`. The filter passes a message only when it is
//! newer than the last one passed in the same epoch. A message from another epoch means
//! the room's history was lost and restarted at seq 1 (Redis lost its data), so the
//! count starts over instead of hiding every message up to the old seq.

use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub(crate) struct SeqFilter {
    last_seq: u64,
    epoch: Option<Arc<str>>,
}

impl SeqFilter {
    /// A filter that has seen everything up to `seq` of `epoch` (a `joined` answer).
    pub(crate) fn at(seq: u64, epoch: &str) -> Self {
        SeqFilter {
            last_seq: seq,
            epoch: Some(epoch.into()),
        }
    }

    /// Whether an event passes; events without a seq (presence, typing) always do.
    pub(crate) fn admit(&mut self, seq: Option<u64>, epoch: Option<&Arc<str>>) -> bool {
        let Some(seq) = seq else { return true };
        if let Some(epoch) = epoch {
            if self.epoch.as_deref() != Some(&**epoch) {
                if self.epoch.is_some() {
                    self.last_seq = 0;
                }
                self.epoch = Some(epoch.clone());
            }
        }
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Option<Arc<str>> {
        Some(Arc::from(s))
    }

    #[test]
    fn drops_old_and_duplicate_messages_of_the_same_epoch() {
        let mut f = SeqFilter::at(5, "a");
        assert!(!f.admit(Some(5), e("a").as_ref()));
        assert!(!f.admit(Some(3), e("a").as_ref()));
        assert!(f.admit(Some(6), e("a").as_ref()));
        assert!(!f.admit(Some(6), e("a").as_ref()));
        assert!(f.admit(None, None));
    }

    #[test]
    fn a_new_epoch_starts_the_count_over() {
        let mut f = SeqFilter::at(20, "old");
        assert!(f.admit(Some(1), e("new").as_ref()));
        assert!(f.admit(Some(2), e("new").as_ref()));
        assert!(!f.admit(Some(2), e("new").as_ref()));
    }
}
