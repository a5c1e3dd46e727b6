//! The `shieldcall` CLI: command-line parsing (`cli.rs`), output in words or JSON lines
//! (`output.rs`, every event in docs/events.md), the demo, and the call service that joins the
//! client library (`shieldcall-client`: connection, PEP, OMEMO service, policies, lock) with the
//! call engine (`shieldcall-jingle`) and the media engine (`shieldcall-media`). The call
//! service's engine work moves into the client library as its call agent (issue 13, next step).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod call_service;
pub mod cli;
pub mod demo;
pub mod output;
pub mod present;

// The client library's modules under their old paths, for the CLI's own modules.
pub use shieldcall_client::{
    ClientError, connection, connectors, error, lock, media_params, omemo_service, pep, policy,
    presence, session,
};
