//! Logging: tracing-subscriber with `RUST_LOG` (default `wxsandbox=info`), human or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the global subscriber once; later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("wxsandbox=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already set, which is fine.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
