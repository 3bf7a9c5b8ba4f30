//! imap (in progress)
