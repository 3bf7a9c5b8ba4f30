//! The in-memory mail store shared by the fake SMTP, IMAP and POP3 servers of one sandbox.
//!
//! One INBOX per mailbox, keyed by the lower-cased address. Messages carry a UID (strictly
//! increasing per mailbox), flags, an internal date and their raw bytes (`Bytes`, so readers share
//! rather than copy them). Every change bumps the mailbox's `watch` channel so IDLE sessions wake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::watch;

/// One message in a mailbox.
#[derive(Clone, Debug)]
pub struct MailboxMessage {
    pub uid: u32,
    /// Flags such as `\Seen`, `\Deleted`, `\Flagged`, or keywords, as set (no `\Recent`).
    pub flags: Vec<String>,
    pub internal_date: SystemTime,
    pub raw: Bytes,
    /// Not yet reported to any IMAP session (`\Recent`).
    pub recent: bool,
}

impl MailboxMessage {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

struct Mailbox {
    uid_validity: u32,
    uid_next: u32,
    messages: Vec<MailboxMessage>,
    changed: watch::Sender<u64>,
}

impl Mailbox {
    fn new(uid_validity: u32) -> Mailbox {
        Mailbox {
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// A snapshot of a mailbox's state, as IMAP SELECT reports it.
pub(crate) struct MailboxStatus {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub uids: Vec<u32>,
    pub recent: usize,
    pub first_unseen: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Store {
    boxes: Mutex<HashMap<String, Mailbox>>,
}

fn key(mailbox: &str) -> String {
    mailbox.trim().to_ascii_lowercase()
}

impl Store {
    fn with<R>(&self, mailbox: &str, f: impl FnOnce(&mut Mailbox) -> R) -> R {
        let mut boxes = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        let uid_validity = (crate::util::unix_secs(SystemTime::now()) & 0x7fff_ffff) as u32;
        let mb = boxes
            .entry(key(mailbox))
            .or_insert_with(|| Mailbox::new(uid_validity.max(1)));
        f(mb)
    }

    /// Append a message; returns its UID.
    pub(crate) fn append(
        &self,
        mailbox: &str,
        raw: Bytes,
        flags: Vec<String>,
        internal_date: SystemTime,
    ) -> u32 {
        self.with(mailbox, |mb| {
            let uid = mb.uid_next;
            mb.uid_next += 1;
            mb.messages.push(MailboxMessage {
                uid,
                flags,
                internal_date,
                raw,
                recent: true,
            });
            mb.bump();
            uid
        })
    }

    /// Every message currently in the mailbox, in UID order.
    pub(crate) fn messages(&self, mailbox: &str) -> Vec<MailboxMessage> {
        self.with(mailbox, |mb| mb.messages.clone())
    }

    /// The message with this UID, if it still exists.
    pub(crate) fn get(&self, mailbox: &str, uid: u32) -> Option<MailboxMessage> {
        self.with(mailbox, |mb| {
            mb.messages
                .binary_search_by_key(&uid, |m| m.uid)
                .ok()
                .map(|i| mb.messages[i].clone())
        })
    }

    /// Mailbox status; when `claim_recent`, messages reported as recent stop being recent.
    pub(crate) fn status(&self, mailbox: &str, claim_recent: bool) -> MailboxStatus {
        self.with(mailbox, |mb| {
            let recent = mb.messages.iter().filter(|m| m.recent).count();
            if claim_recent {
                mb.messages.iter_mut().for_each(|m| m.recent = false);
            }
            MailboxStatus {
                uid_validity: mb.uid_validity,
                uid_next: mb.uid_next,
                uids: mb.messages.iter().map(|m| m.uid).collect(),
                recent,
                first_unseen: mb.messages.iter().position(|m| !m.has_flag("\\Seen")),
            }
        })
    }

    /// UIDs present now.
    pub(crate) fn uids(&self, mailbox: &str) -> Vec<u32> {
        self.with(mailbox, |mb| mb.messages.iter().map(|m| m.uid).collect())
    }

    /// Change the flags of one message; returns the new flags if it exists.
    pub(crate) fn update_flags(
        &self,
        mailbox: &str,
        uid: u32,
        f: impl FnOnce(&mut Vec<String>),
    ) -> Option<Vec<String>> {
        self.with(mailbox, |mb| {
            let i = mb.messages.binary_search_by_key(&uid, |m| m.uid).ok()?;
            let before = mb.messages[i].flags.clone();
            f(&mut mb.messages[i].flags);
            let after = mb.messages[i].flags.clone();
            if before != after {
                mb.bump();
            }
            Some(after)
        })
    }

    /// Remove the messages whose UID is in `uids`; returns how many were removed.
    pub(crate) fn remove(&self, mailbox: &str, uids: &[u32]) -> usize {
        self.with(mailbox, |mb| {
            let before = mb.messages.len();
            mb.messages.retain(|m| !uids.contains(&m.uid));
            let removed = before - mb.messages.len();
            if removed > 0 {
                mb.bump();
            }
            removed
        })
    }

    /// Remove every message flagged `\Deleted` (optionally only those among `only`); returns their UIDs.
    pub(crate) fn expunge(&self, mailbox: &str, only: Option<&[u32]>) -> Vec<u32> {
        self.with(mailbox, |mb| {
            let mut gone = Vec::new();
            mb.messages.retain(|m| {
                let hit = m.has_flag("\\Deleted") && only.is_none_or(|o| o.contains(&m.uid));
                if hit {
                    gone.push(m.uid);
                }
                !hit
            });
            if !gone.is_empty() {
                mb.bump();
            }
            gone
        })
    }

    /// A receiver that changes whenever the mailbox does.
    pub(crate) fn watch(&self, mailbox: &str) -> watch::Receiver<u64> {
        self.with(mailbox, |mb| mb.changed.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_flags_expunge() {
        let s = Store::default();
        let now = SystemTime::now();
        let a = s.append("A@x.test", Bytes::from_static(b"one"), vec![], now);
        let b = s.append("a@X.test", Bytes::from_static(b"two"), vec![], now);
        assert_eq!((a, b), (1, 2));
        assert_eq!(s.uids("a@x.test"), vec![1, 2]);
        s.update_flags("a@x.test", 1, |f| f.push("\\Deleted".into()));
        assert_eq!(s.expunge("a@x.test", None), vec![1]);
        assert_eq!(s.uids("a@x.test"), vec![2]);
        let st = s.status("a@x.test", true);
        assert_eq!((st.recent, st.uid_next), (1, 3));
        assert_eq!(s.status("a@x.test", true).recent, 0);
    }
}
