//! `gbdemo`: start the demo tree on 127.0.0.1 and show the city's catalog.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use integration::demo::{clips_dir, workspace_root, TreeSpec};
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
    /// SIP transport between nodes.
    #[arg(long, value_enum, default_value_t = LinkTransport::Udp)]
    transport: LinkTransport,
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
    let cluster = Cluster::start(&dir, spec, fleet.clone())?;
    let city = cluster.tree.root().clone();
    let expected = villages * fleet.channels();
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
        "The city sees all {expected} cameras, {:.1} s after start.\n",
        took.as_secs_f64()
    );
    let gbgate = bin_dir().join("gbgate");
    let _ = std::process::Command::new(&gbgate)
        .args(["catalog", "--http", &city.http.to_string()])
        .status();
    println!();
    let _ = std::process::Command::new(&gbgate)
        .args(["topology", "--http", &city.http.to_string()])
        .status();
    let camera = cluster.catalog(&city.id).ok().and_then(|cat| {
        cat.into_iter()
            .find(|e| e.device_id.get(10..13) == Some("131"))
            .map(|e| e.device_id)
    });
    match (&camera, &fleet.media) {
        (Some(cam), Some(_)) => println!(
            "\nWatch a village camera at the city (the stream is opened down four tiers on demand):\n  ffplay http://{h}/live/{cam}.flv\n  mpv http://{h}/live/{cam}.flv\n  vlc http://{h}/live/{cam}.ts\nRecordings (the last hour, say): http://{h}/playback/{cam}.flv?start=<unix>&end=<unix>\nOpen streams: curl -s http://{h}/api/v1/streams",
            h = city.http
        ),
        _ => println!("\n(no video: the cameras refuse INVITEs; see `gbdemo --help` for --clip and --make-clips)"),
    }
    println!(
        "\nThe tree keeps running. Try:\n  {g} catalog --http {h}\n  {g} topology --http {h}\n  curl -s http://{h}/api/v1/catalog?status=OFF\n  curl -s http://{h}/metrics | grep gbgate_\nTopology file: {t}\nStop everything with Ctrl-C.",
        g = gbgate.display(),
        h = city.http,
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
