//! smtp (in progress)
