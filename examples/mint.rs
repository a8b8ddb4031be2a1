//! What minting a leaf for a new host costs, on its own: `LeafCache::server_config` for 1,000
//! never-seen host names (one CA signature each; the ECDSA P-256 leaf key is made once), then the
//! same names again (cached), with wxsandbox's own CA as `ca.dir` makes it. Prints the mean per
//! host. A first request through the proxy also pays a full upstream TLS handshake, which a
//! later connection to the same host resumes: that part is not the mint's (scripts/bench.sh
//! measures the whole).
//!   cargo run --release --example mint

use std::time::Instant;

use wxsandbox::tls::ca::CertificateAuthority;
use wxsandbox::tls::leaf::LeafCache;

const HOSTS: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let ca = CertificateAuthority::load_or_create(dir.path())?;
    let leaves = LeafCache::new(&ca, HOSTS * 2)?;
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i}.mint.example")).collect();
    let start = Instant::now();
    for name in &names {
        leaves.server_config(name)?;
    }
    let minted = start.elapsed();
    let start = Instant::now();
    for name in &names {
        leaves.server_config(name)?;
    }
    let cached = start.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / HOSTS as f64;
    println!(
        "leaf for a new host: {:.1} us (mint), {:.2} us (cached); mint minus cached: {:.3} ms, own ECDSA P-256 CA, {HOSTS} hosts",
        per(minted),
        per(cached),
        (per(minted) - per(cached)) / 1000.0
    );
    Ok(())
}
