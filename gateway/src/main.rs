//! `gbgate`: run a node, check a topology file, look at a node's catalog.

/// mimalloc instead of glibc malloc: under a REGISTER storm glibc's chunk
/// unlinking and consolidation took about a quarter of the node's CPU
/// (`perf`, 8,000 registrations/s); SIP parsing allocates many short-lived
/// strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gbgate::api::{CatalogEntry, CatalogPage, TopologyView};
use gbgate::node::Node;
use gbgate::runtime::Running;
use gbgate::streams::{StreamManager, StreamSettings};
use gbgate::transport::QuicSetup;
use tokio_util::sync::CancellationToken;
use topology::{GbId, Topology};

#[derive(Parser)]
#[command(
    name = "gbgate",
    version,
    about = "Multi-tier GB/T 28181 video sharing gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a topology.
    Run {
        /// The topology file shared by all nodes.
        #[arg(long)]
        topology: PathBuf,
        /// This node's 20-digit ID (one of the file's [[node]] ids).
        #[arg(long)]
        node: String,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        json_logs: bool,
        /// Sharing policy files (casbin CSV, `policy/model.conf`), watched
        /// and reloaded on edit. Without any, the node shares everything.
        #[arg(long = "policy", value_name = "FILE")]
        policy: Vec<PathBuf>,
        /// Audit store: a SQLite file path or `postgres://…`. Default with
        /// a policy: `audit-<node>.db` beside the topology file.
        #[arg(long)]
        audit: Option<String>,
        /// Department tokens file (see `gbgate token new`).
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Grants file: approved access requests are appended to it as
        /// time-limited rules. Loaded and watched as a policy file (added
        /// to --policy if not listed); created if missing.
        #[arg(long, value_name = "FILE")]
        grants: Option<PathBuf>,
        /// Access-request store (JSON). Default: beside the grants file,
        /// `<grants>.requests.json`.
        #[arg(long, value_name = "FILE", requires = "grants")]
        requests: Option<PathBuf>,
    },
    /// Access requests of a running node: list, approve, reject (admin).
    Access {
        /// The node's HTTP address, e.g. 127.0.0.1:18080.
        #[arg(long, global = true)]
        http: Option<String>,
        /// An admin token (a department token lists its own requests).
        #[arg(long, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Sharing policy files: check them, or explain a decision.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log: verify its hash chain, or list records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Reports from what a node recorded: the daily availability table.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Department tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Certificates for QUIC links: the federation CA and node certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Validate a topology file (and that its credentials files exist).
    Check {
        /// The topology file.
        #[arg(long)]
        topology: PathBuf,
    },
    /// Print a running node's federated catalog as a tree.
    Catalog {
        /// The node's HTTP address, e.g. 127.0.0.1:18080.
        #[arg(long)]
        http: String,
        /// Only show entries with this status (ON or OFF).
        #[arg(long)]
        status: Option<String>,
        /// Print only the counts.
        #[arg(long)]
        summary: bool,
    },
    /// Print a running node's view of the topology (parent link, children).
    Topology {
        /// The node's HTTP address, e.g. 127.0.0.1:18080.
        #[arg(long)]
        http: String,
    },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// List requests, oldest first.
    List {
        /// pending, approved, rejected or all.
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Approve a request, maybe narrowing it.
    Approve {
        /// The request's number.
        id: u64,
        /// End earlier than requested: YYYY-MM-DDTHH:MM:SSZ, or from now
        /// like 8h or 7d.
        #[arg(long)]
        until: Option<String>,
        /// Grant only these of the requested channels (comma-separated).
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// Grant only these of the requested actions (comma-separated).
        #[arg(long, value_delimiter = ',')]
        actions: Option<Vec<String>>,
    },
    /// Reject a request.
    Reject {
        /// The request's number.
        id: u64,
        /// Why, for the department.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and validate policy files; print every error as file:line: reason.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Which rules decide SUBJECT doing ACTION on CHANNEL, and the outcome.
    Explain {
        /// The policy files.
        #[arg(long = "policy", value_name = "FILE", required = true)]
        policy: Vec<PathBuf>,
        /// `dept:police`, `user:li`, `node:<id>`.
        subject: String,
        /// 20-digit channel ID.
        channel: String,
        /// catalog, live, playback, download, ptz or talk.
        action: String,
        /// The channel's catalog ancestors (device, groups), nearest first.
        #[arg(long = "ancestor", value_name = "ID")]
        ancestors: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// One day's online rate per county or per node below, from the status
    /// changes in the audit store: writes CSV and an HTML table with a
    /// chart, and prints the table. (Per department needs the live
    /// catalog: GET /api/v1/availability?group_by=department.)
    Availability {
        /// The store: SQLite path or postgres:// URL.
        #[arg(long)]
        audit: String,
        /// The day, YYYY-MM-DD, in the zone of --utc-offset.
        #[arg(long)]
        day: String,
        /// county (the ID's first 6 digits) or node (what each channel
        /// came through).
        #[arg(long, default_value = "county")]
        group_by: String,
        /// Hours east of UTC the day is counted in (China: 8).
        #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
        utc_offset: i64,
        /// Where the CSV and HTML go.
        #[arg(long, default_value = ".")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; report the first edited, inserted or deleted record.
    Verify {
        /// The store: SQLite path or postgres:// URL.
        #[arg(long)]
        audit: String,
        /// Also check against the head this node's parent recorded: the
        /// parent's store and this node's ID.
        #[arg(long, requires = "node")]
        against_parent: Option<String>,
        /// This node's ID (with --against-parent).
        #[arg(long)]
        node: Option<String>,
    },
    /// List records, oldest first.
    Query {
        /// The store.
        #[arg(long)]
        audit: String,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this subject (or on behalf of it).
        #[arg(long)]
        subject: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token, append its hash to FILE and print the token (once).
    New {
        /// The person.
        #[arg(long)]
        user: String,
        /// The department.
        #[arg(long)]
        dept: String,
        /// May use the admin endpoints.
        #[arg(long)]
        admin: bool,
        /// The tokens file to append to.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create the federation's CA in DIR: ca.crt and ca.key (mode 0600).
    /// Refuses if DIR already holds one.
    InitCa {
        /// The CA directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name (its certificate's common name).
        #[arg(long, default_value = "gbgate federation CA")]
        name: String,
        /// Days of validity.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node certificate: DIR/<ID>.crt and DIR/<ID>.key (mode 0600),
    /// with the URI SAN urn:gb28181:<ID> and the DNS SAN <ID>.gbgate.
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's 20-digit ID.
        #[arg(long)]
        node: String,
        /// Add the node's sip and http addresses from this topology file as
        /// IP SANs.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Another DNS SAN.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Another IP SAN.
        #[arg(long = "ip", value_name = "ADDR")]
        ip: Vec<std::net::IpAddr>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Replace a node's key and certificate: same SANs, new key; valid as
    /// long as before unless --days is given.
    Renew {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's 20-digit ID.
        #[arg(long)]
        node: String,
        /// Days of validity.
        #[arg(long)]
        days: Option<u32>,
    },
    /// Print what a certificate says. Exits 1 if it has expired, is not
    /// valid yet, or (with --ca) was not signed by that CA.
    Inspect {
        /// The certificate (PEM).
        file: PathBuf,
        /// The CA directory (or its ca.crt) to check the chain against.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> Result<()> {
    // GB/T 28181 Date headers carry local time without a zone, and
    // cameras set their clocks from them. The offset can only be read
    // safely while the process has one thread: now.
    gbgate::node::set_local_offset(
        time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC),
    );
    // No transparent huge pages for this process. mimalloc marks its
    // arenas MADV_HUGEPAGE, and khugepaged then collapses them while the
    // node runs, holding the process's memory map: in a 36,000/s REGISTER
    // storm each pass stalled every registration for tens of milliseconds
    // (`perf record -a` showed khugepaged on both cores at the pause).
    // Latency matters more to a signalling node than the TLB hits.
    let thp_disabled = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    if let Err(e) = thp_disabled {
        eprintln!("warning: could not turn transparent huge pages off ({e}); expect pauses when khugepaged runs");
    }
    let result = dispatch(cli);
    // `gbgate catalog | head` closes the pipe early; like other Unix tools,
    // stop quietly and successfully rather than report an error.
    // Only a bare io::Error: those come from our writes to stdout, while
    // network errors arrive as ureq errors with context.
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            topology,
            node,
            json_logs,
            policy,
            audit,
            tokens,
            grants,
            requests,
        } => {
            init_logs(json_logs);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(
                topology,
                node,
                Sharing {
                    policy,
                    audit,
                    tokens,
                    grants,
                    requests,
                },
            ))
        }
        Command::Policy { command } => policy_command(command),
        Command::Audit { command } => audit_command(command),
        Command::Report { command } => report_command(command),
        Command::Token {
            command:
                TokenCommand::New {
                    user,
                    dept,
                    admin,
                    file,
                },
        } => {
            let (token, entry) = gbgate::api::auth::new_token(&user, &dept, admin);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            f.write_all(entry.as_bytes())?;
            gbgate::api::auth::Tokens::load(&file)?;
            println!("{token}");
            Ok(())
        }
        Command::Cert { command } => cert_command(command),
        Command::Check { topology } => check(&topology),
        Command::Catalog {
            http,
            status,
            summary,
        } => catalog(&http, status.as_deref(), summary),
        Command::Topology { http } => show_topology(&http),
        Command::Access {
            http,
            token,
            command,
        } => {
            let (Some(http), Some(token)) = (http, token) else {
                anyhow::bail!("give the node's --http ADDR and an admin's --token TOKEN");
            };
            access_command(&http, &token, command)
        }
    }
}

/// The sharing options of `gbgate run`.
struct Sharing {
    policy: Vec<PathBuf>,
    audit: Option<String>,
    tokens: Option<PathBuf>,
    grants: Option<PathBuf>,
    requests: Option<PathBuf>,
}

/// The grants file exists and is among the policy files.
fn add_grants(sharing: &mut Sharing) -> Result<()> {
    let Some(grants) = &sharing.grants else {
        return Ok(());
    };
    gbgate::gate::access::GrantsFile::ensure(grants)?;
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if !sharing.policy.iter().any(|p| abs(p) == abs(grants)) {
        sharing.policy.push(grants.clone());
    }
    Ok(())
}

async fn run(path: PathBuf, node: String, mut sharing: Sharing) -> Result<()> {
    let id =
        GbId::parse(&node).with_context(|| format!("--node {node:?} is not a GB/T 28181 ID"))?;
    let cfg = gbgate::config::load(&path, id)?;
    add_grants(&mut sharing)?;
    let policy = if sharing.policy.is_empty() {
        None
    } else {
        match gbgate::gate::reload::load(&sharing.policy, 1) {
            Ok(p) => Some(std::sync::Arc::new(p)),
            Err(errors) => {
                for e in errors.errors() {
                    eprintln!("{e}");
                }
                anyhow::bail!("the policy files do not validate; the node does not start");
            }
        }
    };
    let audit_url = sharing.audit.clone().or_else(|| {
        policy.as_ref().map(|_| {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join(format!("audit-{id}.db"))
                .display()
                .to_string()
        })
    });
    let tokens = match &sharing.tokens {
        Some(f) => gbgate::api::auth::Tokens::load(f)?,
        None => gbgate::api::auth::Tokens::default(),
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let shutdown = CancellationToken::new();
    let http = cfg.http;
    let node = Node::new(
        cfg.identity,
        cfg.settings,
        cfg.credentials,
        std::time::Instant::now(),
    );
    tracing::info!(id = %node.identity().id, name = %node.identity().name, sip = %node.identity().addr, "starting node");
    let media = StreamSettings::from_node(
        node.identity().id,
        node.identity().addr.ip(),
        node.settings(),
    );
    let probe = (
        node.settings().intact_probe,
        node.settings().intact_probe_concurrency,
    );
    let mut node = node;
    let status = policy
        .as_ref()
        .map(|p| gbgate::gate::reload::initial_status(&sharing.policy, p));
    node.set_policy(policy, std::time::Instant::now());
    let audit = match &audit_url {
        Some(url) => {
            let mut store = policy::audit::open(url)
                .with_context(|| format!("opening the audit store {url}"))?;
            // Keepalives report the head from the start, and a child whose
            // head went backwards while this node was down is noticed.
            let head = store.head().context("reading the audit head")?;
            node.set_audit_head(head);
            let children: Vec<GbId> = node.identity().children.keys().copied().collect();
            for child in children {
                if let Some(c) = store.child_head(child.as_str())? {
                    node.remember_child_head(child, c.head);
                }
            }
            tracing::info!(store = %url, %head, "auditing");
            Some(policy::audit::AuditWriter::spawn(store)?)
        }
        None => None,
    };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let quic = cfg.quic.map(|q| QuicSetup {
        runtime: Some(tokio::runtime::Handle::current()),
        ..q
    });
    let (sip, handle, quic_links) =
        spawn_sip_loop(node, quic, audit, events_tx, shutdown.clone()).await?;
    if let Some(status) = &status {
        let (files, h, st, sd) = (
            sharing.policy.clone(),
            handle.clone(),
            status.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = gbgate::gate::reload::watch(files, h, st, sd).await {
                tracing::error!(error = %e, "cannot watch the policy files; edits need a restart");
            }
        });
    }
    let streams = StreamManager::new(handle.clone(), media, quic_links);
    tokio::spawn(streams.clone().run_events(events_rx));
    tokio::spawn(gbgate::intact::run(
        handle.clone(),
        streams.clone(),
        probe.0,
        probe.1,
    ));
    let access = match (&sharing.grants, &status) {
        (Some(grants), Some(status)) => {
            let store = sharing
                .requests
                .clone()
                .unwrap_or_else(|| grants.with_extension("requests.json"));
            let desk = gbgate::gate::access::Desk::open(
                &store,
                gbgate::gate::access::GrantsFile {
                    path: grants.clone(),
                    policy_files: sharing.policy.clone(),
                },
                status.clone(),
            )?;
            tracing::info!(grants = %grants.display(), store = %store.display(), "taking access requests");
            Some(std::sync::Arc::new(desk))
        }
        _ => None,
    };
    if let Some(addr) = http {
        let router = gbgate::api::router_with(
            handle.clone(),
            Some(metrics),
            Some(streams.clone()),
            gbgate::api::Sharing {
                tokens: std::sync::Arc::new(tokens),
                play_key: Some(gbgate::api::auth::PlayKey::random()),
                policy: status.clone(),
                audit_url: audit_url.clone(),
                access,
            },
        );
        let sd = shutdown.clone();
        // A deep accept queue: when an incident draws thousands of viewers
        // at once, a queue of 128 drops their handshakes and each waits
        // out SYN-ACK retransmissions (1, 3, 7, 15 s…).
        let listener = (|| {
            let sock = match addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            sock.set_reuseaddr(true)?;
            sock.bind(addr)?;
            sock.listen(4096)
        })()
        .with_context(|| format!("cannot bind the HTTP API on {addr}; is the port in use?"))?;
        tracing::info!(%addr, "HTTP API listening");
        tokio::spawn(async move {
            // Without TCP_NODELAY chunked video stalls on Nagle plus
            // delayed ACK (hyper#3269). A fixed 256 KiB send buffer (Linux
            // doubles it) instead of autotuning to 4 MiB keeps a slow
            // viewer's backlog in the hub, where it skips to a keyframe,
            // not in the kernel, and is still 40 Mbit/s at 100 ms RTT. A
            // viewer that stops reading altogether (zero window) is cut off
            // by TCP_USER_TIMEOUT: hyper stops polling a blocked body, so
            // the hub cannot see it.
            fn tune(s: &tokio::net::TcpStream) {
                let _ = s.set_nodelay(true);
                let sock = socket2::SockRef::from(s);
                let _ = sock.set_send_buffer_size(256 * 1024);
                let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(60)));
            }
            // Video GETs are answered by the router but written by their
            // hub's writer; the rest goes to hyper.
            let listener = match gbgate::api::video_conn::fork(listener, router.clone(), tune) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "HTTP API stopped");
                    return;
                }
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(async move { sd.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        });
    }
    let sd = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        sd.cancel();
    });
    tokio::task::spawn_blocking(move || sip.join())
        .await
        .context("waiting for the SIP loop")?
        .map_err(|_| anyhow::anyhow!("the SIP loop panicked"))?;
    Ok(())
}

/// Start the node's SIP loop on a thread of its own, with a single-threaded
/// runtime that also runs its UDP and TCP sockets: a message goes from the
/// socket to the node and its answer back to the socket without crossing
/// threads (a thread hand-off per message cost more CPU than parsing it,
/// and most of a REGISTER storm's context switches). HTTP, media and QUIC
/// stay on the multi-threaded runtime and reach the node through its
/// handle. Returns when the sockets are bound (or could not be).
async fn spawn_sip_loop(
    node: Node,
    quic: Option<QuicSetup>,
    audit: Option<policy::audit::AuditWriter>,
    events: tokio::sync::mpsc::UnboundedSender<gbgate::node::CallEvent>,
    shutdown: CancellationToken,
) -> Result<(
    std::thread::JoinHandle<()>,
    gbgate::runtime::NodeHandle,
    Option<gbgate::transport::QuicLinks>,
)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("gbgate-sip".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let (mut running, handle) = match Running::bind(node, quic, shutdown).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                if let Some(writer) = audit {
                    running.set_audit(writer);
                }
                running.set_call_events(events);
                let _ = ready_tx.send(Ok((handle, running.quic_links())));
                running.run(Duration::from_secs(2)).await;
            });
        })
        .context("starting the SIP thread")?;
    let (handle, quic_links) = ready_rx
        .await
        .context("the SIP thread stopped while binding")??;
    Ok((thread, handle, quic_links))
}

fn policy_command(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Check { files } => match policy::Policy::load(&files) {
            Ok(p) => {
                println!(
                    "ok: {} rules, {} subjects",
                    p.rule_count(),
                    p.subjects().len()
                );
                Ok(())
            }
            Err(errors) => {
                for e in errors.errors() {
                    eprintln!("{e}");
                }
                std::process::exit(1);
            }
        },
        PolicyCommand::Explain {
            policy: files,
            subject,
            channel,
            action,
            ancestors,
        } => {
            let p = match policy::Policy::load(&files) {
                Ok(p) => p,
                Err(errors) => {
                    for e in errors.errors() {
                        eprintln!("{e}");
                    }
                    std::process::exit(1);
                }
            };
            let subject: policy::Subject = subject
                .parse()
                .map_err(|e| anyhow::anyhow!("subject {subject:?}: {e}"))?;
            let channel = GbId::parse(&channel).context("channel")?;
            let action: policy::Action = action
                .parse()
                .map_err(|e| anyhow::anyhow!("action {action:?}: {e}"))?;
            let ancestors = ancestors
                .iter()
                .map(|a| GbId::parse(a).with_context(|| format!("ancestor {a:?}")))
                .collect::<Result<Vec<_>>>()?;
            let req = policy::Request {
                subject: &subject,
                channel: &channel,
                ancestors: &ancestors,
                action,
            };
            let now = std::time::SystemTime::now();
            let d = p.decide(&req, now);
            println!("{:?}: {}", d.outcome, d.reason);
            for m in p.explain(&req, now).matches {
                println!(
                    "  {:?} via {} at {}{}",
                    m.effect,
                    m.via,
                    m.rule,
                    if m.in_force { "" } else { " (expired)" }
                );
            }
            Ok(())
        }
    }
}

fn report_command(cmd: ReportCommand) -> Result<()> {
    use gbgate::availability::{channel_times, rates_by_place, to_csv, to_html, GroupBy};
    let ReportCommand::Availability {
        audit,
        day,
        group_by,
        utc_offset,
        out,
    } = cmd;
    let midnight = gbgate::gb::record::parse_local_time(&format!("{day}T00:00:00"))
        .with_context(|| format!("--day {day:?}: use YYYY-MM-DD"))?;
    let from = u64::try_from(midnight - utc_offset * 3600)
        .with_context(|| format!("--day {day:?} is before 1970"))?;
    let to = from + 86_400;
    let by = match GroupBy::parse(&group_by) {
        Some(GroupBy::Department) => anyhow::bail!(
            "--group-by department needs the live catalog and policy: ask the node, GET /api/v1/availability?group_by=department"
        ),
        Some(by) => by,
        None => anyhow::bail!("--group-by {group_by:?}: use county or node"),
    };
    let started = std::time::Instant::now();
    let mut store =
        policy::audit::open(&audit).with_context(|| format!("opening the audit store {audit}"))?;
    let history = store.status_history(from * 1000, to * 1000)?;
    let times = channel_times(&history, from * 1000, to * 1000);
    let rates = rates_by_place(&times, by).context("departments are grouped by the node")?;
    let title = format!(
        "Online rate per {group_by}, {day} (UTC{utc_offset:+}), {} channels",
        times.len()
    );
    std::fs::create_dir_all(&out)?;
    let base = out.join(format!("availability-{day}-{group_by}"));
    let csv = base.with_extension("csv");
    let html = base.with_extension("html");
    std::fs::write(&csv, to_csv(&title, &rates))?;
    std::fs::write(&html, to_html(&title, &rates))?;
    println!("{title}");
    println!("{:<24} {:>9} {:>12}", group_by, "channels", "online rate");
    for r in &rates {
        println!(
            "{:<24} {:>9} {:>11.2}%",
            r.group,
            r.channels,
            r.online_rate * 100.0
        );
    }
    println!(
        "{} status changes read in {:.2} s; wrote {} and {}",
        history.len(),
        started.elapsed().as_secs_f64(),
        csv.display(),
        html.display()
    );
    Ok(())
}

fn audit_command(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify {
            audit,
            against_parent,
            node,
        } => {
            let mut store = policy::audit::open(&audit)?;
            let report = match (against_parent, node) {
                (Some(parent), Some(node)) => {
                    let mut p = policy::audit::open(&parent)?;
                    let Some(head) = p.child_head(&node)? else {
                        anyhow::bail!("the parent has no head recorded for {node}");
                    };
                    println!(
                        "the parent recorded seq {} hash {}",
                        head.head.seq, head.head.hash
                    );
                    store.verify_against(&head.head)?
                }
                _ => store.verify()?,
            };
            match &report.problem {
                None => println!(
                    "clean: {} records, head seq {} hash {}",
                    report.checked, report.head.seq, report.head.hash
                ),
                Some(t) => println!(
                    "TAMPERED: {t} (after {} good records, last good seq {})",
                    report.checked, report.head.seq
                ),
            }
            if !report.is_clean() {
                std::process::exit(2);
            }
            Ok(())
        }
        AuditCommand::Query {
            audit,
            channel,
            subject,
            limit,
        } => {
            let mut store = policy::audit::open(&audit)?;
            let q = policy::audit::AuditQuery {
                object: channel,
                subject,
                limit,
                ..Default::default()
            };
            let out = std::io::stdout();
            let mut out = out.lock();
            for r in store.query(&q)? {
                let e = &r.entry;
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.seq,
                    e.at_ms,
                    e.kind.as_str(),
                    e.subject,
                    e.on_behalf_of.as_deref().unwrap_or("-"),
                    e.object,
                    e.action,
                    e.outcome
                )?;
            }
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn cert_command(command: CertCommand) -> Result<()> {
    use certs::{Ca, San, Validity};
    let node_id = |node: &str| {
        GbId::parse(node).with_context(|| format!("--node {node:?} is not a GB/T 28181 ID"))
    };
    let issued = match command {
        CertCommand::InitCa { dir, name, days } => {
            let ca = Ca::init(&dir, &name, Validity::days(days)?)?;
            println!(
                "created CA {name:?}: {} and {} (mode 0600)",
                ca.cert_path().display(),
                dir.join(certs::ca::CA_KEY_FILE).display()
            );
            return Ok(());
        }
        CertCommand::Issue {
            dir,
            node,
            topology,
            dns,
            ip,
            days,
        } => {
            let id = node_id(&node)?;
            let mut sans: Vec<San> = dns.into_iter().map(San::Dns).collect();
            sans.extend(ip.into_iter().map(San::Ip));
            if let Some(path) = topology {
                let t = Topology::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
                let n = t
                    .node(&id)
                    .with_context(|| format!("{} has no node {id}", path.display()))?;
                let addrs = std::iter::once(n.sip.ip()).chain(n.http.map(|h| h.ip()));
                for a in addrs.filter(|a| !a.is_unspecified()) {
                    sans.push(San::Ip(a));
                }
            }
            let ca =
                Ca::load(&dir).with_context(|| format!("loading the CA in {}", dir.display()))?;
            ca.issue(id, &sans, Validity::days(days)?)?
        }
        CertCommand::Renew { dir, node, days } => {
            let id = node_id(&node)?;
            let ca =
                Ca::load(&dir).with_context(|| format!("loading the CA in {}", dir.display()))?;
            let validity = days.map(Validity::days).transpose()?;
            ca.renew(id, validity)?
        }
        CertCommand::Inspect { file, ca } => return inspect_cert(&file, ca.as_deref()),
    };
    println!(
        "{}: {} until {} ({} days)",
        issued.cert.display(),
        issued.id,
        rfc3339(issued.info.not_after),
        issued.info.days_left(time::OffsetDateTime::now_utc())
    );
    println!("{}: private key (mode 0600)", issued.key.display());
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn inspect_cert(file: &std::path::Path, ca: Option<&std::path::Path>) -> Result<()> {
    let ca_cert = ca.map(|p| {
        if p.is_dir() {
            p.join(certs::ca::CA_CERT_FILE)
        } else {
            p.to_path_buf()
        }
    });
    let info = certs::inspect(file, ca_cert.as_deref())?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();
    writeln!(out, "subject:    {}", info.subject)?;
    writeln!(out, "issuer:     {}", info.issuer)?;
    writeln!(out, "serial:     {}", info.serial)?;
    match (info.is_ca, info.gb_id) {
        (true, _) => writeln!(out, "kind:       CA")?,
        (false, Some(id)) => writeln!(out, "node:       {id}")?,
        (false, None) => writeln!(
            out,
            "node:       none ({})",
            certs::load_cert(file)
                .ok()
                .and_then(|der| certs::gb_id_of(&der).err())
                .map(|e| e.to_string())
                .unwrap_or_default()
        )?,
    }
    for uri in &info.uris {
        writeln!(out, "uri:        {uri}")?;
    }
    for dns in &info.dns {
        writeln!(out, "dns:        {dns}")?;
    }
    for ip in &info.ips {
        writeln!(out, "ip:         {ip}")?;
    }
    writeln!(out, "not before: {}", rfc3339(info.not_before))?;
    let days = info.days_left(now);
    let state = if info.expired_at(now) {
        format!("EXPIRED {} days ago", -days)
    } else if info.not_yet_valid_at(now) {
        "NOT VALID YET".to_owned()
    } else {
        format!("expires in {days} days")
    };
    writeln!(out, "not after:  {} ({state})", rfc3339(info.not_after))?;
    let mut ok = !info.expired_at(now) && !info.not_yet_valid_at(now);
    if let (Some(chains), Some(path)) = (info.chains_to_ca, &ca_cert) {
        let verdict = if chains { "signed by" } else { "NOT signed by" };
        writeln!(out, "chain:      {verdict} {}", path.display())?;
        ok &= chains;
    }
    out.flush()?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn check(path: &PathBuf) -> Result<()> {
    let t = match Topology::load(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let problems = t.check_files();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        std::process::exit(1);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: OK, {} nodes, root {} ({})",
        path.display(),
        t.nodes().len(),
        t.root().id,
        t.root().name
    )?;
    out.flush()?;
    Ok(())
}

/// `--until` as a rule time: as written, or `8h` / `7d` / `30m` from now.
fn until_arg(s: &str) -> Result<String> {
    let unit = match s.chars().last() {
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Ok(s.to_owned()),
    };
    let n: u64 = s[..s.len() - 1]
        .parse()
        .with_context(|| format!("--until {s:?}: a time YYYY-MM-DDTHH:MM:SSZ or like 8h, 7d"))?;
    let at = std::time::SystemTime::now() + Duration::from_secs(n.saturating_mul(unit));
    Ok(gbgate::gate::access::stamp(at))
}

/// Call the access-request API; the body of a 2xx answer, else an error
/// carrying the node's explanation.
fn access_call(
    http: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("http://{http}/api/v1/access-requests{path}");
    let auth = format!("Bearer {token}");
    let mut resp = match body {
        Some(b) => agent.post(&url).header("Authorization", &auth).send_json(b),
        None => agent.get(&url).header("Authorization", &auth).call(),
    }
    .with_context(|| format!("calling {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    if !(200..300).contains(&status) {
        anyhow::bail!("{status}: {}", text.trim_end());
    }
    Ok(text)
}

fn print_request(
    out: &mut impl Write,
    r: &gbgate::gate::access::AccessRequest,
) -> std::io::Result<()> {
    let (objects, actions, until) = match &r.granted {
        Some(g) => (&g.objects, &g.actions, &g.until),
        None => (&r.objects, &r.actions, &r.until),
    };
    writeln!(
        out,
        "{}\t{}\tdept:{}\t{}\t{}\t{}\t{}{}\t{}",
        r.id,
        r.state,
        r.dept,
        r.user,
        objects.join(","),
        actions.join(","),
        r.from
            .as_deref()
            .map(|f| format!("{f}.."))
            .unwrap_or_default(),
        until,
        r.decision_reason.as_deref().unwrap_or(&r.reason)
    )
}

fn access_command(http: &str, token: &str, cmd: AccessCommand) -> Result<()> {
    let text = match cmd {
        AccessCommand::List { state } => {
            access_call(http, token, &format!("?state={state}"), None)?
        }
        AccessCommand::Approve {
            id,
            until,
            channels,
            actions,
        } => {
            let approval = gbgate::gate::access::Approval {
                channels,
                actions,
                until: until.as_deref().map(until_arg).transpose()?,
            };
            let body = serde_json::to_value(approval)?;
            format!(
                "[{}]",
                access_call(http, token, &format!("/{id}/approve"), Some(body))?
            )
        }
        AccessCommand::Reject { id, reason } => {
            let body = serde_json::json!({ "reason": reason });
            format!(
                "[{}]",
                access_call(http, token, &format!("/{id}/reject"), Some(body))?
            )
        }
    };
    let list: Vec<gbgate::gate::access::AccessRequest> =
        serde_json::from_str(&text).context("reading the node's answer")?;
    let mut out = std::io::stdout().lock();
    for r in &list {
        print_request(&mut out, r)?;
    }
    out.flush()?;
    Ok(())
}

/// GET a node's API; with a policy in force the admin token comes from
/// `GBGATE_TOKEN` (an environment variable, so it stays out of `ps`).
fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T> {
    let mut req = ureq::get(url);
    if let Ok(t) = std::env::var("GBGATE_TOKEN") {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().with_context(|| format!("GET {url}"))?;
    Ok(resp.body_mut().read_json()?)
}

fn catalog(http: &str, status: Option<&str>, summary: bool) -> Result<()> {
    let mut all: Vec<CatalogEntry> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("http://{http}/api/v1/catalog?limit=10000");
        if let Some(s) = status {
            url.push_str(&format!("&status={s}"));
        }
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: CatalogPage = get_json(&url)?;
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let topo: TopologyView = get_json(&format!("http://{http}/api/v1/topology"))?;
    let channels = topo.catalog.channels;
    let on = all.iter().filter(|e| e.status == "ON").count();
    // Buffered: a city's catalog is thousands of lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{} {} ({}): {} entries, {} channels, {} ON, {} OFF",
        topo.node.level,
        topo.node.name,
        topo.node.id,
        all.len(),
        channels,
        on,
        all.len() - on
    )?;
    if summary {
        out.flush()?;
        return Ok(());
    }
    let mut by_parent: std::collections::BTreeMap<String, Vec<&CatalogEntry>> = Default::default();
    for e in &all {
        by_parent
            .entry(e.parent_id.clone().unwrap_or_default())
            .or_default()
            .push(e);
    }
    fn walk(
        out: &mut impl Write,
        id: &str,
        depth: usize,
        by_parent: &std::collections::BTreeMap<String, Vec<&CatalogEntry>>,
        seen: &mut std::collections::HashSet<String>,
    ) -> std::io::Result<()> {
        let Some(kids) = by_parent.get(id) else {
            return Ok(());
        };
        for e in kids {
            if !seen.insert(e.device_id.clone()) {
                continue;
            }
            writeln!(
                out,
                "{}{} {:3} {}",
                "  ".repeat(depth),
                e.device_id,
                e.status,
                e.name.as_deref().unwrap_or("")
            )?;
            walk(out, &e.device_id, depth + 1, by_parent, seen)?;
        }
        Ok(())
    }
    let mut seen = std::collections::HashSet::new();
    walk(&mut out, &topo.node.id, 1, &by_parent, &mut seen)?;
    let orphans: Vec<_> = all
        .iter()
        .filter(|e| !seen.contains(&e.device_id))
        .collect();
    if !orphans.is_empty() {
        writeln!(
            out,
            "  (entries whose parent is not in the catalog: {})",
            orphans.len()
        )?;
    }
    out.flush()?;
    Ok(())
}

fn show_topology(http: &str) -> Result<()> {
    let v: TopologyView = get_json(&format!("http://{http}/api/v1/topology"))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {} ({}) sip {}",
        v.node.level, v.node.name, v.node.id, v.node.sip
    )?;
    match &v.parent {
        Some(p) => writeln!(
            out,
            "  parent {} at {} over {}: {}",
            p.id, p.addr, p.transport, p.state
        )?,
        None => writeln!(out, "  root (no parent)")?,
    }
    for c in &v.children {
        writeln!(
            out,
            "  child {} {:12} {}",
            c.id,
            c.state,
            c.name.as_deref().unwrap_or("")
        )?;
    }
    writeln!(
        out,
        "  devices {} registered, {} online; catalog {} entries, {} channels, {} ON",
        v.devices.registered,
        v.devices.online,
        v.catalog.entries,
        v.catalog.channels,
        v.catalog.online
    )?;
    out.flush()?;
    Ok(())
}
