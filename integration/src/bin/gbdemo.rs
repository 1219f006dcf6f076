//! `gbdemo`: start the demo tree on 127.0.0.1 and show the city's catalog.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use integration::demo::{
    clips_dir, demo_run_args, workspace_root, write_demo_sharing, write_tree, TreeSpec,
};
use integration::harness::{bin_dir, Cluster, FleetSpec};

/// Start a GB/T 28181 gateway tree on 127.0.0.1 and show what the city sees.
///
/// Writes a topology for a city ← 2 counties ← 2 towns each ← 2 villages
/// each (15 `gbgate` nodes), starts every node and one `gbsim` per village
/// (4 IP cameras and 2 NVRs with 8 channels: 20 cameras per village, 160 in
/// all), waits until the city's catalog lists every camera ON, prints the
/// catalog and the city's topology, and keeps the tree running until Ctrl-C.
/// The binaries it starts (`gbgate`, `gbsim`) are taken from the directory
/// `gbdemo` is in, or from $GBGATE_BIN_DIR.
#[derive(Parser)]
#[command(name = "gbdemo")]
struct Args {
    /// Directory for the topology, credentials and logs; emptied first.
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
    /// Video the cameras stream when asked: an .h264/.h265 Annex-B clip or
    /// a .ps file. Default: h264.h264 in target/clips, where `make clips`
    /// writes it, found from where gbdemo is rather than the current
    /// directory.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// If the default clip is missing, run `make clips` at the workspace
    /// root to create it (make installs missing tools with apt first).
    #[arg(long)]
    make_clips: bool,
    /// Cameras refuse INVITEs: no video, no clip needed.
    #[arg(long, conflicts_with_all = ["clip", "make_clips"])]
    no_video: bool,
    /// SIP transport between nodes (county → city: see --county-links).
    #[arg(long, value_enum, default_value_t = LinkTransport::Udp)]
    transport: LinkTransport,
    /// How the counties link to the city: over QUIC with certificates
    /// from --pki (the default), or like the other links.
    #[arg(long, value_enum, default_value_t = CountyLinks::Quic)]
    county_links: CountyLinks,
    /// The federation CA directory (`gbgate cert init-ca --dir`); kept
    /// across runs. Certificates missing there are issued.
    #[arg(long, default_value = ".demo-pki")]
    pki: PathBuf,
    /// How nodes ask sources to send video.
    #[arg(long, value_enum, default_value_t = MediaTransport::Udp)]
    media_transport: MediaTransport,
    /// First SIP port; node k listens on SIP_BASE + k (15 ports).
    #[arg(long, default_value_t = TreeSpec::default().sip_base)]
    sip_base: u16,
    /// First HTTP port; node k serves on HTTP_BASE + k (15 ports).
    #[arg(long, default_value_t = TreeSpec::default().http_base)]
    http_base: u16,
}

#[derive(Clone, Copy, ValueEnum)]
enum LinkTransport {
    Udp,
    Tcp,
}

#[derive(Clone, Copy, ValueEnum)]
enum CountyLinks {
    Quic,
    Same,
}

#[derive(Clone, Copy, ValueEnum)]
enum MediaTransport {
    Udp,
    TcpPassive,
    TcpActive,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = std::path::absolute(&a.dir).with_context(|| format!("--dir {}", a.dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let spec = TreeSpec {
        transport: match a.transport {
            LinkTransport::Udp => "udp",
            LinkTransport::Tcp => "tcp",
        },
        media_transport: match a.media_transport {
            MediaTransport::Udp => "udp",
            MediaTransport::TcpPassive => "tcp-passive",
            MediaTransport::TcpActive => "tcp-active",
        },
        sip_base: a.sip_base,
        http_base: a.http_base,
        quic_levels: match a.county_links {
            CountyLinks::Quic => &["county"],
            CountyLinks::Same => &[],
        },
        pki: Some(
            std::path::absolute(&a.pki).with_context(|| format!("--pki {}", a.pki.display()))?,
        ),
        ..TreeSpec::default()
    };
    let media = if a.no_video { None } else { clip(&a)? };
    let fleet = FleetSpec {
        media,
        ..FleetSpec::default()
    };
    let villages = spec.counties * spec.towns * spec.villages;
    let nodes = 1 + spec.counties + spec.counties * spec.towns + villages;
    println!(
        "Starting {nodes} gbgate nodes and {villages} device simulators (logs in {})...",
        dir.display()
    );
    // The sharing policy needs the tree's IDs: write it first (the cluster
    // writes the same files again).
    let tree = write_tree(&dir, &spec).context("writing the topology")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let sharing = write_demo_sharing(&dir, &tree, fleet.channels(), now, EXPIRE_AFTER_SECS)
        .context("writing the demo policy")?;
    let admin = sharing
        .depts
        .iter()
        .find(|d| d.admin)
        .map(|d| d.token.clone());
    let args_dir = dir.clone();
    let mut cluster = Cluster::start_nodes_with(
        &dir,
        spec,
        fleet.clone(),
        |n| demo_run_args(&args_dir, n),
        admin.clone(),
    )?;
    for v in tree.level("village") {
        cluster.start_fleet(&v.id)?;
    }
    let city = cluster.tree.root().clone();
    let expected = sharing.visible_cameras;
    let took = cluster.wait_for("all channels at the city", Duration::from_secs(60), |c| {
        c.catalog(&city.id)
            .map(|cat| {
                cat.iter()
                    .filter(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
                    .count()
                    >= expected
            })
            .unwrap_or(false)
    })?;
    println!(
        "The city sees the {expected} cameras shared with it, {:.1} s after start.\n\
         ({} keeps its town {}'s {} cameras to itself: its policy shares only its other town.)\n",
        took.as_secs_f64(),
        sharing.partial.0,
        sharing.partial.1,
        villages * fleet.channels() - expected,
    );
    let gbgate = bin_dir().join("gbgate");
    let admin_env = admin.clone().unwrap_or_default();
    let _ = std::process::Command::new(&gbgate)
        .args(["catalog", "--http", &city.http.to_string(), "--summary"])
        .env("GBGATE_TOKEN", &admin_env)
        .status();
    println!();
    let _ = std::process::Command::new(&gbgate)
        .args(["topology", "--http", &city.http.to_string()])
        .env("GBGATE_TOKEN", &admin_env)
        .status();
    let h = city.http;
    println!("\nDepartments at the city (tokens are shown once; only their hashes are stored):");
    for d in &sharing.depts {
        let seen = channels_seen(&h.to_string(), &d.token);
        println!(
            "  dept:{:<8} {:<5} {}\n      may: {}{}",
            d.dept,
            d.user,
            d.token,
            d.may,
            seen.map(|n| format!(" ({n} cameras listed now)"))
                .unwrap_or_default()
        );
    }
    println!(
        "\nOpen the console in a browser: http://{h}/console\n  \
         sign in with one of the tokens above: the tree, search, the player (1/4/9/16 views),\n  \
         the PTZ pad, access requests, and for ops also the audit and the topology."
    );
    let (exp_cam, exp_at) = &sharing.expiring;
    println!(
        "\nurban's grant on {exp_cam} expires {} s after the start: its viewers end then, and it leaves urban's list.",
        exp_at - now
    );
    if fleet.media.is_some() {
        println!(
            "\nWatch as a department (the URL carries a signed token valid 5 minutes):\n  \
             T=<token>; C=<camera from the list>\n  \
             curl -s -H \"Authorization: Bearer $T\" http://{h}/api/v1/channels\n  \
             curl -s -H \"Authorization: Bearer $T\" -d \"{{\\\"channel\\\":\\\"$C\\\"}}\" -H 'Content-Type: application/json' http://{h}/api/v1/streams\n  \
             ffplay \"http://{h}<flv from the answer>\""
        );
    } else {
        println!("\n(no video: the cameras refuse INVITEs; see `gbdemo --help` for --clip and --make-clips)");
    }
    println!(
        "\nThe tree keeps running. Try:\n  GBGATE_TOKEN=<ops token> {g} catalog --http {h}\n  curl -s -H 'Authorization: Bearer <ops token>' http://{h}/api/v1/audit?limit=20\n  edit {p} and watch the city reload it (a bad line is refused; see /api/v1/policy)\n  curl -s http://{h}/metrics | grep gbgate_\nTopology file: {t}\nStop everything with Ctrl-C.",
        g = gbgate.display(),
        p = dir.join("policy").join(format!("{}.csv", city.id)).display(),
        t = cluster.tree.topology.display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_wait(tx);
    let _ = rx.recv();
    println!("stopping...");
    drop(cluster);
    Ok(())
}

/// The clip the cameras stream: `--clip` as given (it must exist), else
/// `h264.h264` from the `make clips` directory, made on request. A missing
/// default clip is not an error: the demo runs without video and says how
/// to get it.
fn clip(a: &Args) -> Result<Option<PathBuf>> {
    if let Some(p) = &a.clip {
        if !p.is_file() {
            bail!("--clip {}: no such file", p.display());
        }
        return Ok(Some(p.clone()));
    }
    let cwd = std::env::current_dir()?;
    let dir = clips_dir(&bin_dir(), &cwd);
    let clip = dir.join("h264.h264");
    if clip.is_file() {
        return Ok(Some(clip));
    }
    let root = workspace_root(&bin_dir()).or_else(|| workspace_root(&cwd));
    match (root, a.make_clips) {
        (Some(root), true) => {
            println!(
                "{} is missing; running `make clips` in {} ...",
                clip.display(),
                root.display()
            );
            let status = std::process::Command::new("make")
                .arg("clips")
                .current_dir(&root)
                .status()
                .context("running make (is it installed?)")?;
            if !status.success() || !clip.is_file() {
                bail!(
                    "`make clips` in {} did not create {} ({status})",
                    root.display(),
                    clip.display()
                );
            }
            Ok(Some(clip))
        }
        (Some(root), false) => {
            println!(
                "No video clip at {}: the cameras will refuse INVITEs.\nTo stream video, run `make clips` in {} (or start gbdemo with --make-clips, or --clip FILE).",
                clip.display(),
                root.display()
            );
            Ok(None)
        }
        (None, make) => {
            if make {
                bail!(
                    "--make-clips: no gbgate workspace (Cargo.toml with [workspace]) above {} or {}",
                    bin_dir().display(),
                    cwd.display()
                );
            }
            println!(
                "No video clip at {}: the cameras will refuse INVITEs.\nTo stream video, give one with --clip FILE (an .h264/.h265 Annex-B clip, or a .ps file).",
                clip.display()
            );
            Ok(None)
        }
    }
}

/// How long urban management's temporary grant lasts in the demo.
const EXPIRE_AFTER_SECS: i64 = 180;

/// How many cameras `token`'s department sees at `http` now.
fn channels_seen(http: &str, token: &str) -> Option<usize> {
    let mut r = ureq::get(&format!("http://{http}/api/v1/channels?limit=10000"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .ok()?;
    let page: gbgate::api::ChannelsPage = r.body_mut().read_json().ok()?;
    Some(page.items.len())
}

fn ctrlc_wait(tx: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                // Ctrl-C, or SIGTERM (`timeout`, `kill`): stop the tree either way.
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
            });
        }
        let _ = tx.send(());
    });
}
