//! Which EHLO extensions of the upstream are shown to the legacy client, in auth and relay mode.

/// EHLO keywords passed from the upstream to the client. Everything else (AUTH,
/// STARTTLS, vendor extensions) is dropped.
pub(super) const KEPT_EXTENSIONS: &[&str] = &[
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
];

/// Extensions a relay-mode listener does not pass on: the relay handles one command at a time
/// and streams DATA, so it offers neither pipelining nor BDAT.
pub(super) const RELAY_DROPPED: &[&str] = &["PIPELINING", "CHUNKING", "BINARYMIME"];
