//! The fan-out benchmark's floor: serve a recorded HTTP-FLV stream to every
//! viewer that connects, one write per frame per viewer and nothing else.
//! `make bench` starts it next to a node, on the same core, with the bytes
//! that node served.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

/// Serve a recorded FLV stream as a bare writer (the fan-out floor).
#[derive(Parser)]
struct Args {
    /// Address to listen on for viewers.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The recording: an FLV byte stream as a node served it.
    #[arg(long)]
    flv: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let flv = std::fs::read(&args.flv).with_context(|| format!("read {}", args.flv.display()))?;
    let rec = integration::fanout::Recording::parse(&flv)
        .with_context(|| format!("parse {}", args.flv.display()))?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    integration::fanout::serve_floor(listener, rec)
}
