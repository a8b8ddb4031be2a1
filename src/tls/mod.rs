//! TLS: the local CA and per-host leaf certificates (client side of the MITM), and the upstream
//! TLS client with its audit (server side).

pub mod audit;
pub mod ca;
pub mod checks;
pub mod leaf;
