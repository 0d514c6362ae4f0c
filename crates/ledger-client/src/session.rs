//! Read-your-writes across regions: the newest `seq` this client saw written to each
//! account, sent as `min_seq` on its reads of that account, so a region whose copy is
//! older waits for it (or refuses) instead of answering with the past. Pure.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug, Default, Clone)]
pub struct Session {
    seen: HashMap<String, i64>,
}

impl Session {
    /// Takes note of an answered write or read: an entry (`account_id`, `seq`) or an
    /// account (`id`, `seq`). Keeps the highest seq per account.
    pub fn observe(&mut self, body: &Value) {
        let account = body
            .get("account_id")
            .or_else(|| body.get("id"))
            .and_then(Value::as_str);
        let seq = body.get("seq").and_then(Value::as_i64);
        if let (Some(account), Some(seq)) = (account, seq) {
            let known = self.seen.entry(account.to_owned()).or_insert(seq);
            *known = (*known).max(seq);
        }
    }

    /// The `min_seq` a read of `account` must carry (none: nothing written by us).
    pub fn min_seq(&self, account: &str) -> Option<i64> {
        self.seen.get(account).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_highest_seen_seq_per_account_is_kept() {
        let mut session = Session::default();
        session.observe(&json!({"account_id": "acc-1", "seq": 4}));
        session.observe(&json!({"account_id": "acc-1", "seq": 2}));
        session.observe(&json!({"id": "acc-2", "seq": 1, "balance": "0.00"}));
        session.observe(&json!({"type": "problem", "status": 409}));
        assert_eq!(session.min_seq("acc-1"), Some(4));
        assert_eq!(session.min_seq("acc-2"), Some(1));
        assert_eq!(session.min_seq("acc-3"), None);
    }
}
