//! The moderation rule, as a pure function of a message and what the bot remembers:
//! a message with a listed word is deleted, and its sender, after `strikes` deletions
//! within the window, is muted for `mute`. Bots, the moderation bot itself included,
//! are never judged: two bots must not moderate each other into a loop, and a bot's
//! text is its operator's business.
//!
//! The reasons sent with the commands never repeat the word: they are shown to the room.

use std::time::{Duration, Instant};

use proto::client::{ModAction, Moderate};
use proto::server::Message;

use crate::strikes::Strikes;
use crate::words::WordList;

/// What the moderation bot knows and remembers.
#[derive(Debug)]
pub struct Moderator {
    words: WordList,
    strikes: Strikes,
    strikes_to_mute: u32,
    mute: Duration,
    /// The bot's own user id (its AMQP login).
    me: String,
}

impl Moderator {
    pub fn new(
        me: impl Into<String>,
        words: WordList,
        strikes_to_mute: u32,
        mute: Duration,
        window: Duration,
    ) -> Moderator {
        Moderator {
            words,
            strikes: Strikes::new(window),
            strikes_to_mute: strikes_to_mute.max(1),
            mute,
            me: me.into(),
        }
    }

    /// The `moderate` commands a message calls for, in the order to send them: nothing,
    /// a delete, or a delete and then a mute.
    pub fn judge(&mut self, message: &Message, now: Instant) -> Vec<Moderate> {
        if message.from.bot || message.from.id == self.me {
            return Vec::new();
        }
        if self.words.first_match(&message.text).is_none() {
            return Vec::new();
        }
        let room = &message.room;
        let user = &message.from.id;
        let mut actions = vec![Moderate {
            room: room.clone(),
            action: ModAction::Delete,
            user: None,
            msg_id: Some(message.id.clone()),
            role: None,
            duration_s: None,
            reason: Some("the message contains a blocked word".into()),
            settings: None,
        }];
        let strikes = self.strikes.add(room, user, now);
        if strikes >= self.strikes_to_mute {
            self.strikes.clear(room, user);
            actions.push(Moderate {
                room: room.clone(),
                action: ModAction::Mute,
                user: Some(user.clone()),
                msg_id: None,
                role: None,
                duration_s: Some(self.mute.as_secs().max(1)),
                reason: Some(format!("{strikes} messages with blocked words")),
                settings: None,
            });
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::server::Author;

    const HOUR: Duration = Duration::from_secs(3600);

    fn moderator(strikes: u32) -> Moderator {
        Moderator::new(
            "modbot",
            WordList::new(&["heck"]).unwrap(),
            strikes,
            Duration::from_secs(60),
            HOUR,
        )
    }

    fn message(id: &str, from: &str, bot: bool, text: &str) -> Message {
        Message {
            room: "general".into(),
            id: id.into(),
            seq: 1,
            epoch: "e".into(),
            from: Author {
                id: from.into(),
                name: from.into(),
                bot,
            },
            text: text.into(),
            ts: 0,
        }
    }

    #[test]
    fn a_listed_word_gets_the_message_deleted() {
        let mut m = moderator(3);
        let actions = m.judge(&message("m1", "bob", false, "oh Heck."), Instant::now());
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].action, ModAction::Delete);
        assert_eq!(actions[0].room, "general");
        assert_eq!(actions[0].msg_id.as_deref(), Some("m1"));
        assert!(!actions[0].reason.as_deref().unwrap().contains("eck"));
    }

    #[test]
    fn clean_messages_pass() {
        let mut m = moderator(1);
        assert!(m
            .judge(&message("m1", "bob", false, "heckle"), Instant::now())
            .is_empty());
    }

    #[test]
    fn the_nth_strike_mutes_and_starts_over() {
        let mut m = moderator(2);
        let now = Instant::now();
        assert_eq!(m.judge(&message("m1", "bob", false, "heck"), now).len(), 1);
        let second = m.judge(&message("m2", "bob", false, "heck"), now);
        assert_eq!(second.len(), 2);
        assert_eq!(second[1].action, ModAction::Mute);
        assert_eq!(second[1].user.as_deref(), Some("bob"));
        assert_eq!(second[1].duration_s, Some(60));
        assert_eq!(m.judge(&message("m3", "bob", false, "heck"), now).len(), 1);
    }

    #[test]
    fn bots_and_the_bot_itself_are_left_alone() {
        let mut m = moderator(1);
        let now = Instant::now();
        assert!(m
            .judge(&message("m1", "echo", true, "heck"), now)
            .is_empty());
        assert!(m
            .judge(&message("m2", "modbot", false, "heck"), now)
            .is_empty());
    }
}
