//! wxsandbox: a local HTTPS/WSS forward proxy that puts the WeChat mini program network sandbox
//! between a client (phone, simulator, H5 build, test harness) and the internet.
//!
//! # Layout
//!
//! Data flows one way: **config → policy → proxy / control**.
//!
//! - [`config`]: the YAML file, loaded into raw serde structs and validated into typed values.
//! - [`policy`]: pure decisions (no I/O): which app, which API, allowed or refused and why.
//! - [`tls`]: the local CA and leaf cache (client side), the upstream TLS client and its audit.
//! - [`proxy`]: the I/O: accept loop, CONNECT, MITM, forwarding, WebSocket, tunnels.
//! - [`control`]: the control API, dashboard and CA download on `control.listen`.
//! - [`shutdown`]: one cancellation token and one task tracker for a bounded drain.

pub mod config;
pub mod policy;
pub mod tls;
