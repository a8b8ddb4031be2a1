//! `wxsandbox`: thin entry point: arguments → logging → config (exit 64 when bad) → run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use wxsandbox::cli::{Cli, Command, LogFormat, OutputFormat, RunArgs};
use wxsandbox::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use wxsandbox::shutdown::DRAIN_GRACE;
use wxsandbox::tls::ca::{CaOrigin, CertificateAuthority};
use wxsandbox::{telemetry, StartError};

/// The process's heap: jemalloc. A call allocates about 70 small blocks (hyper's header maps,
/// rustls' records, the call's record) and frees them within microseconds; glibc's malloc spent
/// about 11% of the proxy's instructions on them, jemalloc's thread caches less than half of that
/// (issue #11, `scripts/instructions.sh`). Built without "cache-oblivious" placement, which gives
/// every large block a page of padding: with it, 1,000 idle tunnels took 40 KiB each instead of
/// 36 (`scripts/memory.sh`). mimalloc was faster still by a little, but took 48 KiB a tunnel.
/// The library and its tests keep the system allocator: only the binary chooses.
#[global_allocator]
static HEAP: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for a config the proxy can't run with (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status with `--fail-on-refusal` when a call failed in the sandbox.
const EXIT_REFUSALS: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process: rustls' ring backend (rcgen uses ring too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wxsandbox: can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(Command::Run(args)) => runtime.block_on(run(args)),
        Some(Command::CheckConfig { config }) => check_config(config.as_deref()),
        Some(Command::CheckCert {
            url,
            trust,
            resolve,
            format,
        }) => runtime.block_on(check_cert(url, trust, resolve, format)),
        Some(Command::Ca { dir, config }) => ca(dir.as_deref(), config.as_deref()),
        Some(Command::Completions { shell }) => print_out(&wxsandbox::cli::completions(shell)),
        Some(Command::Manpage { command }) => match wxsandbox::cli::manpage(command.as_deref()) {
            Ok(page) => print_out(&page),
            Err(e) => {
                eprintln!("wxsandbox: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Write generated text to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxsandbox: can't write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Config::load_default(),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxsandbox: the config can't be used:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let overrides = Overrides::of(&args);
    overrides.apply(&mut config);
    let source = config.source.clone();
    let running = match wxsandbox::start(config).await {
        Ok(r) => r,
        Err(
            e @ (StartError::ControlWithoutToken(_) | StartError::Ca(_) | StartError::Trust(_)),
        ) => {
            eprintln!("wxsandbox: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("wxsandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Edits to the file apply without a restart (the command line still wins).
    let file = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()));
    if let Some(path) = file {
        wxsandbox::reload::enable(
            &running.shared,
            path,
            Box::new(move |c: &mut Config| overrides.apply(c)),
        );
    }
    let ca = &running.shared.ca;
    let message = format!(
        "wxsandbox: proxy on {} (config {source}); dashboard http://{}/; CA {} (SHA-256 {}); \
         phones: set the Wi-Fi proxy to this machine, port {}, then open http://wxsandbox.cert/",
        running.proxy_addr,
        running.control_addr,
        ca.cert_path().display(),
        ca.fingerprint_sha256(),
        running.proxy_addr.port()
    );
    if args.log_format == LogFormat::Json {
        tracing::info!(proxy = %running.proxy_addr, control = %running.control_addr, "{message}");
    } else {
        eprintln!("{message}");
    }
    wxsandbox::shutdown::signal().await;
    tracing::info!("shutting down: draining in-flight calls");
    if !running.shutdown(DRAIN_GRACE).await {
        tracing::warn!(grace = ?DRAIN_GRACE, "some connections were still open after the drain grace");
    }
    let refused = running.shared.refused_total();
    if args.fail_on_refusal && refused > 0 {
        eprintln!("wxsandbox: {refused} call(s) failed in the sandbox (see /api/log); exiting {EXIT_REFUSALS}");
        return ExitCode::from(EXIT_REFUSALS);
    }
    ExitCode::SUCCESS
}

fn check_config(path: Option<&Path>) -> ExitCode {
    match load_config(path) {
        Ok(config) => {
            println!("{}: ok ({} app(s))", config.source, config.apps.len());
            ExitCode::SUCCESS
        }
        // Nothing was judged: the file is missing, not a regular file or too large.
        Err(e) if e.is_unreadable() => {
            eprintln!("wxsandbox: the config can't be read:\n{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn ca(dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    let result = (|| -> anyhow::Result<CertificateAuthority> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => {
                load_config(config)
                    .context("the config can't be used")?
                    .ca
                    .dir
            }
        };
        Ok(CertificateAuthority::load_or_create(&dir)?)
    })();
    match result {
        Ok(ca) => {
            let origin = match ca.origin() {
                CaOrigin::Generated => "generated now".to_owned(),
                CaOrigin::Existing { key_kind } => format!("existing, key {key_kind}"),
            };
            println!("certificate: {}", ca.cert_path().display());
            match ca.key_mode() {
                Some(mode) => println!("key:         {} ({mode:04o})", ca.key_path().display()),
                None => println!("key:         {}", ca.key_path().display()),
            }
            println!("subject:     {}", ca.subject());
            println!("origin:      {origin}");
            println!("sha256:      {}", ca.fingerprint_sha256());
            if let Some(warning) = ca.key_warning() {
                println!("warning:     {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wxsandbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check_cert(
    url: String,
    trust: Vec<std::path::PathBuf>,
    resolve: Vec<String>,
    format: OutputFormat,
) -> ExitCode {
    use wxsandbox::check_cert::{check_cert, parse_resolve, url_host_port, CheckCertOptions};
    let port = url_host_port(&url).map(|(_, p)| p).unwrap_or(443);
    let resolve = match resolve
        .iter()
        .map(|r| parse_resolve(r, port))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxsandbox: {e}");
            return ExitCode::from(2);
        }
    };
    match check_cert(&CheckCertOptions {
        url,
        trust,
        resolve,
    })
    .await
    {
        Ok(report) => {
            match format {
                OutputFormat::Text => print!("{}", report.render_text()),
                OutputFormat::Json => println!("{}", report.render_json()),
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wxsandbox: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the command line sets over the file, applied at start and on every reload.
#[derive(Debug, Clone)]
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    control: Option<std::net::SocketAddr>,
    ca_dir: Option<PathBuf>,
    token: Option<String>,
    refusal: Option<wxsandbox::config::RefusalStyle>,
    skip_domain_check: bool,
}

impl Overrides {
    fn of(args: &RunArgs) -> Self {
        Overrides {
            listen: args.listen,
            control: args.control,
            ca_dir: args.ca_dir.clone(),
            token: args.token.clone(),
            refusal: args.refusal.map(Into::into),
            skip_domain_check: args.skip_domain_check,
        }
    }

    fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.proxy.listen = listen;
        }
        if let Some(control) = self.control {
            config.control.listen = control;
        }
        if let Some(dir) = &self.ca_dir {
            config.ca.dir.clone_from(dir);
        }
        if self.token.is_some() {
            config.control.token.clone_from(&self.token);
        }
        if let Some(refusal) = self.refusal {
            config.sandbox.refusal = refusal;
        }
        if self.skip_domain_check {
            config.sandbox.skip_domain_check = true;
        }
    }
}
