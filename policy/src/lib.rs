//! Sharing policy for gbgate.
//!
//! This crate will hold the casbin model and rule files, the `Authorizer`
//! (decide and explain), hot reload and the audit store, as described in
//! `architecture.md`. The signaling plane does not consult it yet: every
//! node currently shares its whole catalog with its parent.

pub mod audit;
