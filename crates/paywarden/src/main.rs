//! The `paywarden` command line.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use paywarden::{
    app::{App, SeedMode},
    config::{Config, Overrides},
    mcp::PaywardenMcp,
};
use paywarden_emulator::{Emulator, EmulatorConfig, DEMO_ENTITY_ID, DEMO_TOKEN};
use rmcp::ServiceExt;
use tokio::net::TcpListener;

/// The server's allocator: jemalloc. Under 64 concurrent calls glibc's malloc spent about a fifth
/// of the server's CPU in `malloc`/`free` and in waits on its arena locks, and mimalloc (the
/// allocator until 2026-12-06) about as much in its allocation path and in collecting blocks
/// freed by other threads; jemalloc spends about 7 % (`perf` profiles of the audited read,
/// docs/performance.md, "The allocator: jemalloc"). Built unprefixed, it also serves C's
/// `malloc`/`free`, which the bundled SQLite allocates with.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// paywarden: a payments MCP server whose safety the server, not the model, enforces.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (also PAYWARDEN_CONFIG).
    #[arg(long, global = true, env = "PAYWARDEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Directory for paywarden's database and the emulator's state (also PAYWARDEN_DATA_DIR;
    /// relative: from the working directory) [default: beside the SQLite database DATABASE_URL
    /// names (FILE-paywarden/), else the per-user data directory, e.g. ~/.local/share/paywarden].
    /// Accepted before or after a sub-command's own arguments.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP over Streamable HTTP at /mcp and /agentic/v1/mcp.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        common: Common,
        /// Do not create demo data in an empty emulator.
        #[arg(long)]
        no_seed: bool,
    },
    /// Serve MCP over stdin/stdout (Claude Desktop style); the entity comes from
    /// PAYWARDEN_ENTITY_ID / PAYWARDEN_TOKEN (default: the emulator's demo entity).
    Stdio {
        #[command(flatten)]
        common: Common,
        /// OPP entity id to act as.
        #[arg(long)]
        entity_id: Option<String>,
        /// That entity's token.
        #[arg(long)]
        token: Option<String>,
    },
    /// Run the offline OPP emulator on its own.
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
    },
    /// Create the demo data in the emulator (if it is not there yet); with --transactions,
    /// bulk-load that many generated OPP transactions into the emulator's database instead
    /// (benchmarks: `paywarden seed --transactions 1000000 --data-dir D`, then `paywarden serve
    /// --data-dir D`).
    Seed {
        #[command(flatten)]
        common: Common,
        /// Bulk-load N generated OPP transactions (payments and their captures, refunds,
        /// reversals, chargebacks; several brands, currencies and result codes) straight into
        /// the emulator's database in DATA_DIR, 1 to 50,000,000. Deterministic for the same
        /// N, --days, --random-seed and end time (now). Appends to what is there.
        #[arg(long, value_name = "N")]
        transactions: Option<u64>,
        /// With --transactions: the OPP entity to seed, the demo entity or the second demo
        /// entity, or `all` for N transactions for each [default: the demo entity].
        #[arg(long, requires = "transactions")]
        entity: Option<String>,
        /// With --transactions: spread the transactions over this many days before now
        /// [default: 365].
        #[arg(long, requires = "transactions")]
        days: Option<u32>,
        /// With --transactions: the generator's seed [default: 1].
        #[arg(long, requires = "transactions")]
        random_seed: Option<u64>,
    },
    /// The audit log and its signed checkpoints.
    Audit {
        #[command(subcommand)]
        action: paywarden::cli_audit::AuditAction,
        #[command(flatten)]
        common: Common,
    },
    /// Signed receipts of executed money movements: verify one offline, show or export them.
    Receipt {
        #[command(subcommand)]
        action: paywarden::cli_receipts::ReceiptAction,
        #[command(flatten)]
        common: Common,
    },
    /// Approval requests that the policy sent to a person: list, show, approve, deny.
    Approvals {
        #[command(subcommand)]
        action: paywarden::cli_approvals::ApprovalsAction,
        #[command(flatten)]
        common: Common,
    },
    /// Apply paywarden's database migrations (SQLite or PostgreSQL, from database_url /
    /// DATABASE_URL) and print the schema versions. Refuses a database migrated by a newer
    /// paywarden.
    Migrate {
        #[command(flatten)]
        common: Common,
        /// Only print the applied and pending versions; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// ifthenpay emulator helpers: play the shopper (pay, reject, let expire).
    Ifthenpay {
        #[command(subcommand)]
        action: paywarden::cli_ifthenpay::IfthenpayAction,
        #[command(flatten)]
        common: Common,
    },
    /// Sandbox failure injection in the emulator: make the next matching provider request time
    /// out, fail after committing, be rate limited, leave a refund pending, ...
    Faults {
        #[command(subcommand)]
        action: paywarden::cli_faults::FaultsAction,
        #[command(flatten)]
        common: Common,
    },
    /// Money-moving calls whose outcome is unknown, keys released after their settle window,
    /// and operations that reached a provider late (exit 1 while one awaits review);
    /// --acknowledge one after review.
    Reconcile {
        #[command(flatten)]
        args: paywarden::cli_reconcile::ReconcileArgs,
        #[command(flatten)]
        common: Common,
    },
    /// The policy.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Evaluate the policy against a sample call and say which rule matched and why.
    Check {
        /// Policy file [default: the configured one, else the built-in policy].
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Tool, e.g. perform_refund.
        #[arg(long)]
        tool: String,
        /// Toolset [default: the tool's, from the tool catalogue].
        #[arg(long)]
        toolset: Option<String>,
        /// Amount as a decimal string in --currency, e.g. 10.00.
        #[arg(long, requires = "currency")]
        amount: Option<String>,
        /// ISO 4217 currency of --amount.
        #[arg(long)]
        currency: Option<String>,
        /// Entity id.
        #[arg(long, default_value = DEMO_ENTITY_ID)]
        entity: String,
        /// Age of the referenced transaction, in days.
        #[arg(long)]
        age_days: Option<i64>,
        /// Already moved today by this entity, decimal string in --currency.
        #[arg(long, default_value = "0")]
        moved_today: String,
        /// The MCP client's name.
        #[arg(long)]
        client: Option<String>,
    },
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("seeding demo payments {bar:40} {pos}/{len}") {
        bar.set_style(style);
    }
    bar
}

fn load(cli_config: Option<&std::path::Path>, overrides: Overrides) -> anyhow::Result<Config> {
    Ok(Config::load(cli_config, &overrides)?)
}

/// The configuration of a subcommand whose only flag over it is `--data-dir`.
fn load_with_data_dir(
    cli_config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    load(
        cli_config,
        Overrides {
            data_dir,
            ..Overrides::default()
        },
    )
}

/// Ends the process with a subcommand's exit code when it is not 0 (refused, invalid, found).
fn exit_unless_ok(code: i32) {
    if code != 0 {
        std::process::exit(code);
    }
}

/// `paywarden seed --transactions N`: bulk-loads generated OPP transactions into the
/// emulator's database (`DATA_DIR/emulator.db`) with [`paywarden_emulator::bulk_seed`].
///
/// # Errors
/// A configuration that talks to a real OPP (`opp.base_url` set), an unknown entity, a count
/// or range out of bounds, or a database failure.
async fn bulk_seed(
    config: &Config,
    count: u64,
    entity: Option<&str>,
    days: Option<u32>,
    random_seed: Option<u64>,
) -> anyhow::Result<()> {
    if !config.uses_emulator() {
        anyhow::bail!(
            "paywarden seed --transactions writes into the offline emulator's database, but this configuration sends OPP calls to {} (opp.base_url): refusing to seed a real provider",
            config.opp.base_url.as_deref().unwrap_or_default()
        );
    }
    let entities: Vec<&str> = match entity.unwrap_or(DEMO_ENTITY_ID) {
        "all" => vec![DEMO_ENTITY_ID, paywarden_emulator::SECOND_ENTITY_ID],
        e if e == DEMO_ENTITY_ID || e == paywarden_emulator::SECOND_ENTITY_ID => vec![e],
        other => anyhow::bail!(
            "--entity {other:?} is not an emulator entity: use {DEMO_ENTITY_ID} (the demo entity), {} (the second demo entity) or all",
            paywarden_emulator::SECOND_ENTITY_ID
        ),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let path = config.data_dir.join("emulator.db");
    let until = chrono::DateTime::<chrono::Utc>::from_timestamp(chrono::Utc::now().timestamp(), 0)
        .unwrap_or_default()
        .naive_utc();
    for entity_id in entities {
        let started = std::time::Instant::now();
        let spec = paywarden_emulator::BulkSeed {
            entity_id: entity_id.to_string(),
            transactions: count,
            days: days.unwrap_or(365),
            until,
            seed: random_seed.unwrap_or(1),
        };
        let summary = paywarden_emulator::bulk_seed(&path, &spec)
            .await
            .with_context(|| format!("seeding {}", path.display()))?;
        println!(
            "seeded {} OPP transactions ({} payments) for entity {entity_id} over the {} days before {until} UTC into {} in {:.1} s",
            summary.transactions,
            summary.payments,
            spec.days,
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Opens paywarden's configured database (migrating it when needed).
async fn open_store(config: &Config) -> anyhow::Result<paywarden::store::Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    Ok(paywarden::store::Store::connect(&config.database()?).await?)
}

/// `paywarden migrate`: applies (or with `check`, lists) migrations.
async fn migrate(config: &Config, check: bool) -> anyhow::Result<()> {
    use paywarden::store::{redact_url, Store};
    let url = config.database()?;
    if !config.uses_postgres() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    }
    let store = Store::connect_unmigrated(&url).await?;
    let before = store.schema_status().await?;
    let versions = |v: &[i64]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    println!(
        "database: {} ({})\n  applied: {}\n  known to this paywarden: {}",
        redact_url(&url),
        before.engine,
        versions(&before.applied),
        versions(&before.known)
    );
    if check {
        println!("  pending: {}", versions(&before.pending()));
        return Ok(());
    }
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("  up to date; nothing to apply");
    } else {
        println!("  applied now: {}", versions(&applied));
    }
    Ok(())
}

/// Completes at SIGINT (Ctrl-C) or SIGTERM (a supervisor's stop). The handlers are installed
/// now: a signal from here on is not lost, and no longer ends the process by itself.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("PAYWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rmcp logs whole MCP requests (tool arguments: keys, personal data) at debug and trace,
    // and at info three lines per stateless request or session (the client's whole
    // `initialize` parameters, Debug-formatted: a measurable share of a call's CPU under load,
    // docs/performance.md). It stays at warn unless PAYWARDEN_LOG names it (protocol debugging
    // on a test system).
    let names_rmcp = std::env::var("PAYWARDEN_LOG").is_ok_and(|v| v.contains("rmcp"));
    if let (false, Ok(cap)) = (names_rmcp, "rmcp=warn".parse()) {
        filter = filter.add_directive(cap);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // No colour codes in a file or a desktop app's log (stdio servers' stderr).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The stack of each of the runtime's worker threads (tokio's default is 2 MiB). A tool call
/// runs on one as a chain of nested futures, from the HTTP request through rmcp and the pipeline
/// to the policy's CEL interpreter and the SQLite statements of a write transaction, which run
/// on the calling thread (docs/performance.md, "Write transactions on the caller's thread").
/// A debug build's frames for that chain come within a few hundred KiB of 2 MiB; the stack is
/// reserved address space, touched only as deep as it is used, so RSS does not change.
const WORKER_STACK_BYTES: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let file = cli.config.as_deref();
    match cli.command {
        Command::Serve {
            listen,
            common,
            no_seed,
        } => {
            let config = load(
                file,
                Overrides {
                    listen,
                    data_dir: common.data_dir,
                    ..Overrides::default()
                },
            )?;
            let listen = config.listen;
            let seed = if no_seed {
                SeedMode::Off
            } else {
                SeedMode::IfEmpty
            };
            let app = App::build(config, seed, &progress_bar()).await?;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            // Before the banner, so a stop right after it is graceful (during start-up, a
            // signal still ends the process at once).
            let stop = shutdown_signal()?;
            print_banner(&app, addr);
            app.serve(listener, stop).await?;
        }
        Command::Stdio {
            common,
            entity_id,
            token,
        } => {
            let config = load(
                file,
                Overrides {
                    data_dir: common.data_dir,
                    entity_id,
                    token,
                    ..Overrides::default()
                },
            )?;
            let app = App::build(config, SeedMode::IfEmpty, &ProgressBar::hidden()).await?;
            let stop = shutdown_signal()?;
            let checkpoints = app.start_checkpoints();
            let server = PaywardenMcp::new(app.mcp_state())
                .serve(rmcp::transport::io::stdio())
                .await
                .context("MCP stdio handshake failed")?;
            // Until the client closes stdin, or SIGINT/SIGTERM.
            let cancel = server.cancellation_token();
            tokio::spawn(async move {
                stop.await;
                cancel.cancel();
            });
            let waited = server.waiting().await;
            // The audit rows of calls cancelled by the shutdown are written before the last
            // checkpoint and the exit.
            app.store().drain_audit().await;
            checkpoints.finish().await;
            waited?;
            drop(app);
        }
        Command::Emulator { listen, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
            let emulator =
                Emulator::open(EmulatorConfig::demo(config.data_dir.join("emulator.db")))
                    .await
                    .context("emulator failed to open its database")?;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let url = format!("http://{}", listener.local_addr()?);
            let _ = std::fs::write(
                config.data_dir.join(paywarden::app::EMULATOR_URL_FILE),
                &url,
            );
            println!(
                "paywarden OPP emulator (SANDBOX, no real money) on {url}\n  entityId: {DEMO_ENTITY_ID}\n  Authorization: Bearer {DEMO_TOKEN}"
            );
            println!(
                "  Stripe API (/v1/customers, /v1/payment_intents, /v1/refunds, ...): Authorization: Bearer {} (restricted: {})",
                paywarden_emulator::DEMO_STRIPE_KEY,
                paywarden_emulator::DEMO_STRIPE_RESTRICTED_KEY
            );
            println!("  ifthenpay demo keys (emulator only):");
            for (name, key) in paywarden::cli_ifthenpay::demo_keys() {
                println!("    {name:<18} {key}");
            }
            emulator.serve(listener).await.context("emulator failed")?;
        }
        Command::Seed {
            common,
            transactions: Some(count),
            entity,
            days,
            random_seed,
        } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            bulk_seed(&config, count, entity.as_deref(), days, random_seed).await?;
        }
        Command::Seed { common, .. } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let app = App::build(config, SeedMode::Off, &ProgressBar::hidden()).await?;
            if app.config().uses_emulator() {
                match app.seed_if_empty(&progress_bar()).await? {
                    Some(summary) => println!(
                        "created {} demo payments ({} transactions) for entity {DEMO_ENTITY_ID}",
                        summary.payments, summary.transactions
                    ),
                    None => println!("demo data already present for entity {DEMO_ENTITY_ID}"),
                }
            }
            if app.stripe_sandbox() {
                match app.seed_ops_if_empty(&progress_bar()).await? {
                    Some(charges) => println!(
                        "created the ops demo: 5 customers and {charges} Stripe charges (sarah@example.com has a duplicate $49.99 charge)"
                    ),
                    None => println!("ops demo data already present for entity {DEMO_ENTITY_ID}"),
                }
            }
        }
        Command::Ifthenpay { action, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let code = paywarden::cli_ifthenpay::run(action, &config.data_dir).await?;
            exit_unless_ok(code);
        }
        Command::Faults { action, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let code = paywarden::cli_faults::run(action, &config.data_dir).await?;
            exit_unless_ok(code);
        }
        Command::Approvals { action, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let store = open_store(&config).await?;
            let code = paywarden::cli_approvals::run(&store, action).await?;
            exit_unless_ok(code);
        }
        Command::Reconcile { args, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let store = open_store(&config).await?;
            let code = paywarden::cli_reconcile::run(&store, args).await?;
            exit_unless_ok(code);
        }
        Command::Migrate { common, check } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            migrate(&config, check).await?;
        }
        Command::Policy {
            action:
                PolicyAction::Check {
                    policy,
                    tool,
                    toolset,
                    amount,
                    currency,
                    entity,
                    age_days,
                    moved_today,
                    client,
                },
        } => {
            let config = load(file, Overrides::default())?;
            let policy = match policy.or(config.safety.policy_file) {
                Some(path) => paywarden::policy::Policy::load(&path)?,
                None => paywarden::policy::Policy::builtin(),
            };
            let (amount_minor, moved_today_minor) = match &currency {
                Some(code) => {
                    let currency = paywarden_domain::Currency::from_code(code)?;
                    let amount = amount
                        .as_deref()
                        .map(|a| paywarden_domain::Money::parse(a, currency))
                        .transpose()?
                        .map(|m| m.minor_units());
                    let moved = paywarden_domain::Money::parse(&moved_today, currency)?;
                    (amount, moved.minor_units())
                }
                None => (None, 0),
            };
            // The same facts the server gives the policy: from the tool catalogue.
            let Some(spec) = paywarden::catalog::spec(&tool) else {
                let names: Vec<&str> = paywarden::catalog::CATALOG.iter().map(|t| t.name).collect();
                anyhow::bail!(
                    "unknown tool {tool:?}: paywarden's tools are {}",
                    names.join(", ")
                );
            };
            let moves_money = spec.effect.moves_money();
            let input = paywarden::policy::PolicyInput {
                toolset: toolset.unwrap_or_else(|| spec.toolset.to_string()),
                tool,
                entity,
                moves_money,
                amount_minor,
                currency,
                transaction_age_days: age_days,
                moved_today_minor,
                client,
            };
            let explanation = policy.explain(&input)?;
            print!("{}", paywarden::policy::render_check(&explanation));
            if explanation.outcome.is_err() {
                std::process::exit(1);
            }
        }
        Command::Receipt {
            action: paywarden::cli_receipts::ReceiptAction::Verify { file, public_keys },
            ..
        } => {
            // Offline: no configuration, no database.
            let (code, stdout, stderr) = paywarden::cli_receipts::verify_file(&file, &public_keys);
            print!("{stdout}");
            eprint!("{stderr}");
            exit_unless_ok(code);
        }
        Command::Receipt { action, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let store = open_store(&config).await?;
            let code = paywarden::cli_receipts::run(&store, action).await?;
            exit_unless_ok(code);
        }
        Command::Audit { action, common } => {
            let config = load_with_data_dir(file, common.data_dir)?;
            let store = open_store(&config).await?;
            let code = paywarden::cli_audit::run(&store, &config, action).await?;
            exit_unless_ok(code);
        }
    }
    Ok(())
}

fn print_banner(app: &App, addr: SocketAddr) {
    use std::fmt::Write as _;
    let base = format!("http://{addr}");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "paywarden {} listening on {base}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "  MCP endpoints: {base}/mcp   {base}/agentic/v1/mcp   (health: {base}/healthz)"
    );
    let _ = writeln!(
        out,
        "  HTTP+SSE (2024-11-05 clients, e.g. Cursor's SSE): {base}/sse   {base}/agentic/v1/sse"
    );
    let _ = writeln!(out, "  Data: {}", app.config().data_dir.display());
    if let Some(emulator) = app.emulator_url() {
        let _ = writeln!(
            out,
            "  SANDBOX: OPP is paywarden's offline emulator at {emulator}; no real money moves."
        );
        if let Some(seeded) = app.seeded() {
            let _ = writeln!(
                out,
                "  Demo data: created {} payments ({} transactions) over the last 120 days for the demo entity.",
                seeded.payments, seeded.transactions
            );
        }
        if app.stripe_sandbox() {
            let _ = writeln!(
                out,
                "  SANDBOX: Stripe is paywarden's offline emulator too (key {}); ops demo customers: sarah@example.com (duplicate $49.99 charge), james@, alice@, bob@, carol@example.com{}.",
                paywarden_emulator::DEMO_STRIPE_KEY,
                app.seeded_ops()
                    .map(|n| format!(" ({n} charges created now)"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "  Demo credentials (valid only against the emulator):");
        let _ = writeln!(out, "    X-Entity-Id: {DEMO_ENTITY_ID}");
        let _ = writeln!(out, "    X-Token:     {DEMO_TOKEN}");
        if app
            .config()
            .safety
            .toolsets
            .iter()
            .any(|t| t == "ifthenpay")
        {
            let _ = writeln!(
                out,
                "  ifthenpay: {base}/mcp/payments/ (JSON-RPC, keys as tool arguments); demo keys (emulator only):"
            );
            for (name, key) in paywarden::cli_ifthenpay::demo_keys() {
                let _ = writeln!(out, "    {name:<18} {key}");
            }
            let _ = writeln!(
                out,
                "    play the shopper: paywarden ifthenpay shopper pay|reject|expire --request-id ID --data-dir \"{}\"",
                app.config().data_dir.display()
            );
        }
        if app.config().operators.is_empty() {
            let _ = writeln!(
                out,
                "  Approval page: {base}/approvals  (demo operator {}, password {}; sandbox only)",
                paywarden::app::DEMO_OPERATOR,
                paywarden::app::DEMO_OPERATOR_TOKEN
            );
        }
        let config = serde_json::json!({
            "servers": {
                "paywarden": {
                    "type": "http",
                    "url": format!("{base}/agentic/v1/mcp"),
                    "headers": { "X-Entity-Id": DEMO_ENTITY_ID, "X-Token": DEMO_TOKEN }
                }
            }
        });
        let _ = writeln!(out, "  Client configuration (paste into your MCP client):");
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&config).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            out,
            "  Approval page: {base}/approvals (operators from the configuration)"
        );
        let _ = writeln!(
            out,
            "  OPP: {} (callers' X-Entity-Id/X-Token are passed on to OPP)",
            app.config().opp.base_url.as_deref().unwrap_or_default()
        );
    }
    // A closed stdout (a supervisor that stopped reading) must not take the server down.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, out.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
}
