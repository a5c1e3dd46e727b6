//! The `shieldcall` CLI: command-line parsing (`cli.rs`), output in words or JSON lines
//! (`output.rs`, every event in docs/events.md), the demo, and the presenter of the client
//! library's call agent (`present.rs`). Everything else (connection, sign-in, OMEMO, policies,
//! the call agent) is the client library, `shieldcall-client`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod demo;
pub mod output;
pub mod present;

// The client library's modules under their old paths, for the CLI's own modules.
pub use shieldcall_client::{
    ClientError, agent, connection, connectors, error, lock, media_params, omemo_service, pep,
    policy, presence, session,
};
