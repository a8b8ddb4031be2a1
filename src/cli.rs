//! The command line of SPEC section 1. Every flag of `run` also reads an environment variable
//! (`WXSANDBOX_CONFIG`, `WXSANDBOX_LISTEN`, ...) so docker-compose can set it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wxsandbox",
    version,
    about = "The WeChat mini program network sandbox, as a local HTTPS/WSS proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`, which is the default command.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Judge a config as the admin console would; exit 1 on errors.
    CheckConfig {
        /// The config file (default: config/wxsandbox.yaml, else the built-in one).
        #[arg(short = 'c', long = "config", env = "WXSANDBOX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Audit a server's TLS as strictly as iOS does; exit 1 on failure.
    CheckCert {
        /// https://host/ or https://host:port/
        url: String,
        /// Extra PEM CA file to trust (repeatable).
        #[arg(long = "trust")]
        trust: Vec<PathBuf>,
        /// Connect to ADDR for HOST (HOST=IP:PORT), like curl's --resolve.
        #[arg(long = "resolve")]
        resolve: Vec<String>,
        /// Output format.
        #[arg(long = "format", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Make the CA if missing; print its paths and SHA-256 fingerprint.
    Ca {
        /// The CA directory (default: ca.dir of the config).
        #[arg(long = "dir", env = "WXSANDBOX_CA_DIR")]
        dir: Option<PathBuf>,
        #[arg(short = 'c', long = "config", env = "WXSANDBOX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `wxsandbox completions bash > /etc/bash_completion.d/wxsandbox`.
    Completions {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, e.g. `wxsandbox manpage | man -l -`.
    Manpage {
        /// A subcommand's own page (e.g. check-cert) instead of wxsandbox(1).
        command: Option<String>,
    },
}

/// The completion script of `shell` for the `wxsandbox` command line.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "wxsandbox", &mut out);
    out
}

/// The manual page (roff) of `wxsandbox`, or of one of its subcommands (`wxsandbox-NAME(1)`).
/// `Err` names the subcommands when `command` is not one.
pub fn manpage(command: Option<&str>) -> Result<Vec<u8>, String> {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let page = match command {
        None => root,
        Some(name) => {
            let Some(sub) = root.find_subcommand(name).cloned() else {
                let names: Vec<String> = root
                    .get_subcommands()
                    .map(|s| s.get_name().to_owned())
                    .collect();
                return Err(format!("no subcommand {name}: one of {}", names.join(", ")));
            };
            // clap takes a `&'static str` name; this runs once, then the process exits.
            let full: &'static str =
                Box::leak(format!("wxsandbox-{}", sub.get_name()).into_boxed_str());
            sub.name(full).version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| format!("can't render the page: {e}"))?;
    Ok(out)
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// The config file (default: config/wxsandbox.yaml, else the built-in one).
    #[arg(short = 'c', long = "config", env = "WXSANDBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Proxy address (overrides proxy.listen).
    #[arg(long = "listen", env = "WXSANDBOX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Control API and dashboard address (overrides control.listen).
    #[arg(long = "control", env = "WXSANDBOX_CONTROL")]
    pub control: Option<SocketAddr>,
    /// Skip the domain lists and the TLS audit, like the devtools' debug switch.
    #[arg(long = "skip-domain-check", env = "WXSANDBOX_SKIP_DOMAIN_CHECK")]
    pub skip_domain_check: bool,
    /// Log format.
    #[arg(long = "log-format", value_enum, env = "WXSANDBOX_LOG_FORMAT", default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// CA directory (overrides ca.dir).
    #[arg(long = "ca-dir", env = "WXSANDBOX_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// At shutdown, exit 3 when any call was refused, timed out, interrupted or failed upstream
    /// (for CI jobs).
    #[arg(long = "fail-on-refusal", env = "WXSANDBOX_FAIL_ON_REFUSAL")]
    pub fail_on_refusal: bool,
    /// How refused calls end: auto (answer when the call carries X-Wxsandbox-* headers, else
    /// fail), fail (at the transport, as on the platform) or answer (HTTP status + JSON).
    #[arg(long = "refusal", value_enum, env = "WXSANDBOX_REFUSAL")]
    pub refusal: Option<RefusalArg>,
    /// Control API token (overrides control.token).
    #[arg(long = "token", env = "WXSANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `--refusal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefusalArg {
    Auto,
    Fail,
    Answer,
}

impl From<RefusalArg> for crate::config::RefusalStyle {
    fn from(arg: RefusalArg) -> Self {
        match arg {
            RefusalArg::Auto => crate::config::RefusalStyle::Auto,
            RefusalArg::Fail => crate::config::RefusalStyle::Fail,
            RefusalArg::Answer => crate::config::RefusalStyle::Answer,
        }
    }
}
