//! `ota`: over-the-air updates for fleets of IoT devices, over MQTT.
//!
//! The binary holds no logic: it parses the command line, loads files and
//! calls a library. Each family of subcommands lives in its own file:
//!
//! - `cmd_keys.rs`: `ota keygen`, `ota http-token`.
//! - `cmd_artifact.rs`: `ota artifact sign | inspect`.
//! - `cmd_artifact_ops.rs`: `ota artifact push | list | show | delete`.
//! - `cmd_fleet.rs`: `ota serve`, `ota group put | list | delete`,
//!   `ota devices list | show`.
//! - `cmd_identity.rs`: `ota devices provision | rotate | revoke`.
//! - `cmd_enroll.rs`: `ota devices enrollment-token | accept | reject`.
//! - `cmd_campaign.rs` (and `cmd_campaign/`): `ota campaign create | start |
//!   pause | resume | abort | status | list | watch`, `ota emergency`.
//! - `cmd_broker.rs`: `ota broker mosquitto`, an external Mosquitto's files.
//! - `cmd_pki.rs`: `ota pki init | device`, the fleet's CA and certificates.
//! - `cmd_demo.rs`: `ota demo`, the main job.
//! - `cmd_init.rs`: `ota init DIR`, a working setup (keys, configs), the
//!   second step.
//! - `keyfile.rs`: reading and writing key files (mode 0600, no overwrite).
//! - `rt.rs`: the tokio runtime and shutdown signal for long-running families.
//!
//! Adding a family is two lines here: `mod cmd_x;` and one line in
//! `commands!`, naming a clap `Args` (or, with `#[command(subcommand)]`, a
//! `Subcommand`) type that implements [`Run`]. Its doc comment is its help.
//! A family that needs async calls
//! `rt::block_on(lib::run(config, rt::shutdown_signal()))` in its `run`.
//!
//! Errors are `anyhow` here only, printed as one line `error: ...` with exit
//! code 1; clap's usage errors exit with 2.

use std::process::ExitCode;

/// mimalloc, not the system allocator: a bridge holding a million small
/// records (ids, labels, per-campaign state) fragments glibc's arenas
/// (docs/scaling.md, "What grows with what").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

mod cmd_artifact;
mod cmd_artifact_ops;
mod cmd_bench;
mod cmd_broker;
mod cmd_campaign;
mod cmd_demo;
mod cmd_enroll;
mod cmd_fleet;
mod cmd_identity;
mod cmd_init;
mod cmd_keys;
mod cmd_line;
mod cmd_pki;
mod cmd_sim;
mod conn;
mod keyfile;
mod rt;
// other families' modules register here: mod cmd_sim; ...

/// What a parsed subcommand does.
trait Run {
    /// Runs it to the end; the error is shown to the user as one line.
    fn run(self) -> anyhow::Result<()>;
}

/// Declares the subcommands and dispatches each to its [`Run`]. The order
/// here is the order of `ota --help`: the order a new user meets them.
macro_rules! commands {
    ($( $(#[$meta:meta])* $variant:ident($ty:ty), )*) => {
        #[derive(clap::Subcommand)]
        enum Command {
            $( $(#[$meta])* $variant($ty), )*
        }

        impl Run for Command {
            fn run(self) -> anyhow::Result<()> {
                match self {
                    $( Command::$variant(c) => c.run(), )*
                }
            }
        }
    };
}

commands! {
    Demo(cmd_demo::Demo),
    Init(cmd_init::Init),
    Keygen(cmd_keys::Keygen),
    HttpToken(cmd_keys::HttpToken),
    #[command(subcommand)] Artifact(cmd_artifact::Artifact),
    Serve(cmd_fleet::Serve),
    #[command(subcommand)] Group(cmd_fleet::Group),
    #[command(subcommand)] Devices(cmd_fleet::Devices),
    #[command(subcommand)] Broker(cmd_broker::Broker),
    #[command(subcommand)] Pki(cmd_pki::Pki),
    #[command(subcommand)] Campaign(cmd_campaign::Campaign),
    Emergency(cmd_campaign::Emergency),
    #[command(subcommand)] Line(cmd_line::Line),
    // other families register here, in this order:
    // sim (cmd_sim.rs); bench.
    Sim(cmd_sim::Sim),
    Bench(cmd_bench::Bench),
}

/// ota moves signed firmware, apps and configuration to fleets of IoT
/// devices over MQTT, in waves that stop by themselves when devices fail.
///
/// Devices speak a small CBOR protocol (docs/protocol.md) to a bridge
/// (`ota serve`) through any MQTT broker; every image is signed with a
/// release key that only you hold (`ota keygen`, `ota artifact sign`), and
/// every device checks every block against the signed manifest.
#[derive(Parser)]
#[command(
    name = "ota",
    version,
    propagate_version = false,
    after_help = "Start here: `ota demo` (a whole rollout in one process), then `ota init DIR`\n\
                  (a working setup of your own: keys, ota.toml, a simulated fleet) and the tour\n\
                  it prints (docs/tour.sh).\n\n\
                  Logs go to stderr; set RUST_LOG (default: info,rumqttd=warn) to change them.\n\
                  Docs: README.md, docs/protocol.md, docs/ARCHITECTURE.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0, usage errors 2, as clap decides.
        Err(e) => e.exit(),
    };
    // The demo talks to people: only warnings from the services it runs
    // (a campaign's halt it shows itself).
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Bench(_));
    init_logs(if quiet {
        "warn,rumqttd=off,bridge::campaign::manager=error"
    } else {
        "info,rumqttd=warn"
    });
    quiet_panics();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// tracing to stderr, filtered by RUST_LOG (default `info,rumqttd=warn`).
fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: piped into a file or a log collector,
    // escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// A panic is a bug in ota: say so in one line instead of a backtrace
/// dump, unless the user asked for backtraces.
fn quiet_panics() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        eprintln!("error: internal error, a bug in ota (please report it): {msg}");
    }));
}

/// The error and its causes, `: `-separated, on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace(['\n', '\r'], " ")
}
