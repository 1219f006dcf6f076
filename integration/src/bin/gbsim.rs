//! `gbsim`: simulated GB/T 28181 IPCs and NVRs for tests, demos and benchmarks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use integration::sim::{parse_transport, run, FleetConfig, MediaSources};
use integration::streamer::Source;
use tokio_util::sync::CancellationToken;
use topology::GbId;

#[derive(Parser)]
#[command(name = "gbsim", about = "Simulated GB/T 28181 cameras and NVRs")]
struct Args {
    /// The node's SIP address.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// The node's 20-digit ID.
    #[arg(long)]
    server_id: String,
    /// udp or tcp.
    #[arg(long, default_value = "udp")]
    transport: String,
    /// Address to bind, UDP and TCP alike (port 0 picks one free for both).
    #[arg(long, default_value = "127.0.0.1:0")]
    local: std::net::SocketAddr,
    /// First 10 digits of device IDs; default: the server's civil code + industry.
    #[arg(long)]
    prefix: Option<String>,
    /// First serial number of this fleet's IDs (keep fleets apart).
    #[arg(long, default_value_t = 1)]
    serial_base: u32,
    /// Number of IPCs (one channel each).
    #[arg(long, default_value_t = 4)]
    ipcs: usize,
    /// Number of NVRs.
    #[arg(long, default_value_t = 2)]
    nvrs: usize,
    /// Channels per NVR.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Digest password of every device.
    #[arg(long, default_value = "gbgate-demo")]
    password: String,
    /// Keepalive period, seconds (fractions allowed).
    #[arg(long, default_value_t = 60.0)]
    keepalive: f64,
    /// Registration Expires, seconds.
    #[arg(long, default_value_t = 3600)]
    expires: u64,
    /// Most REGISTERs in flight at once.
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Answer MESSAGEs each device keeps in flight (a catalog answer of
    /// 1,000 channels is hundreds of them over UDP).
    #[arg(long, default_value_t = integration::sim::ANSWER_WINDOW)]
    answer_window: usize,
    /// Each device raises an alarm on its first channel every this many
    /// seconds (video motion, priority 1).
    #[arg(long)]
    alarm_every: Option<f64>,
    /// Benchmark: register every device once, print the rate, exit.
    #[arg(long)]
    bench_register: bool,
    /// Video every channel streams live when INVITEd: an H.264/H.265
    /// Annex-B clip (.h264, .h265), or a PS file (.ps, .vob) sent as it is.
    #[arg(long)]
    media: Option<std::path::PathBuf>,
    /// Video served for playback (default: the live one).
    #[arg(long)]
    playback_media: Option<std::path::PathBuf>,
    /// Frame rate of Annex-B clips.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Live clips start where an encoder running since gbsim started would
    /// be (mid-GOP, as real cameras do), not at the clip's first keyframe.
    #[arg(long)]
    free_running: bool,
    /// Test aid: send the PS file of --media with the flag bytes of every
    /// video PES header removed, as a broken device would.
    #[arg(long)]
    strip_pes_flags: bool,
    /// Test aid: this channel's live video (an Annex-B --media clip) has
    /// its SPS cut, so no decoder can start; repeat for more channels.
    #[arg(long)]
    broken_video: Vec<String>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let server_id = GbId::parse(&a.server_id).context("--server-id")?;
    let transport = parse_transport(&a.transport).map_err(anyhow::Error::msg)?;
    let cfg = FleetConfig {
        server: gbgate::sip::Peer::plain(transport, a.server),
        server_id,
        id_prefix: a
            .prefix
            .unwrap_or_else(|| integration::sim::default_prefix(server_id)),
        serial_base: a.serial_base,
        ipcs: a.ipcs,
        nvrs: a.nvrs,
        channels_per_nvr: a.channels,
        password: a.password,
        keepalive: Duration::from_secs_f64(a.keepalive),
        expires: Duration::from_secs(a.expires),
        // Port 0: `run` binds UDP and TCP on one free port and uses that.
        local: a.local,
        catalog_budget: if transport == gbgate::sip::Transport::Tcp {
            60_000
        } else {
            1300
        },
        register_window: a.window,
        answer_window: a.answer_window,
        alarm_every: a.alarm_every.map(Duration::from_secs_f64),
    };
    let media = match &a.media {
        Some(path) => {
            let load = |p: &std::path::Path| {
                let s = Source::load(p, None, Some(a.fps))
                    .with_context(|| format!("loading media {}", p.display()))?;
                if a.strip_pes_flags {
                    return s.without_pes_flags().context("--strip-pes-flags");
                }
                Ok::<_, anyhow::Error>(s)
            };
            let live = load(path)?;
            let playback = match &a.playback_media {
                Some(p) => load(p)?,
                None => live.clone(),
            };
            let broken = if a.broken_video.is_empty() {
                None
            } else {
                let ids = a
                    .broken_video
                    .iter()
                    .map(|s| GbId::parse(s).with_context(|| format!("--broken-video {s}")))
                    .collect::<Result<_>>()?;
                Some((ids, live.with_broken_sps().context("--broken-video")?))
            };
            Some(MediaSources {
                live,
                playback,
                free_running: a.free_running,
                broken,
            })
        }
        None => None,
    };
    let devices = a.ipcs + a.nvrs;
    let bench = a.bench_register;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            sd.cancel();
        });
        let started = Instant::now();
        let mut reported = false;
        let stats = run(cfg, media, shutdown, |s, now| {
            if !reported && s.registered == devices {
                reported = true;
                eprintln!(
                    "gbsim: {devices} devices registered in {:.3}s",
                    now.duration_since(started).as_secs_f64()
                );
                return !bench;
            }
            true
        })
        .await?;
        if bench {
            let secs = stats
                .all_registered_at
                .map(|t| t.duration_since(started).as_secs_f64())
                .unwrap_or(f64::NAN);
            println!(
                "register_bench devices={devices} seconds={secs:.3} rate={:.0}/s challenges={} refused={}",
                devices as f64 / secs,
                stats.challenges,
                stats.refused
            );
        }
        Ok(())
    })
}
