//! spocgw: a high-assurance SPOC interoperability gateway.
//!
//! Police border systems call the gateway over mutual TLS; the gateway reads each message once,
//! checks it, and forwards it over a second mutual-TLS connection to the Ministry of Interior's
//! National SPOC. The modules follow the request's path (see `DESIGN.md`): [`tls`] (listeners'
//! and upstreams' TLS, peer identity), [`xml`] (envelope reading, faults), [`gateway`] (listener,
//! routes, pipeline, upstream pool), [`admin`] (health, readiness, metrics); [`sim`] is the
//! simulated Ministry used by tests, demos and benchmarks; [`cli`] holds the commands.
#![forbid(unsafe_code)]
// Every public function that can fail says how, under `# Errors`.
#![warn(clippy::missing_errors_doc)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod gateway;
pub mod json;
pub mod keys;
pub mod policy;
pub mod reload;
pub mod signed;
pub mod sim;
pub mod tls;
pub mod tpm;
pub mod xml;
