//! The audit trail in the store: one list of moderation actions, newest first, capped.
//! Only dispatchers write it (after an action is carried out); operators read it with
//! `warren-admin audit`.

use proto::keys::AUDIT_LENGTH;

use super::model::StoreError;
use super::RoomStore;

impl RoomStore {
    /// Records `entry` (a JSON object) at the head of the audit list and drops what is
    /// past [`AUDIT_LENGTH`], in one transaction.
    pub async fn audit(&self, entry: &str) -> Result<(), StoreError> {
        let key = self.keys.audit();
        let () = redis::pipe()
            .atomic()
            .lpush(&key, entry)
            .ignore()
            .ltrim(&key, 0, AUDIT_LENGTH - 1)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
