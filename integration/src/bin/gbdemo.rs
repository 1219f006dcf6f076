//! `gbdemo`: start the demo tree on 127.0.0.1 and show the city's catalog.

use std::time::Duration;

use anyhow::Result;
use integration::demo::TreeSpec;
use integration::harness::{bin_dir, Cluster, FleetSpec};

fn main() -> Result<()> {
    let dir = std::env::current_dir()?.join(".demo");
    let _ = std::fs::remove_dir_all(&dir);
    let spec = TreeSpec::default();
    // Cameras stream the clip `make clips` generates (make demo runs it).
    let clip = std::env::current_dir()?.join("target/clips/h264.h264");
    let fleet = FleetSpec {
        media: clip.exists().then_some(clip),
        ..FleetSpec::default()
    };
    println!(
        "Starting 15 gbgate nodes and 8 device simulators (logs in {})...",
        dir.display()
    );
    let cluster = Cluster::start(&dir, spec, fleet.clone())?;
    let city = cluster.tree.root().clone();
    let expected = 8 * fleet.channels();
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
        _ => println!("\n(no video: run `make clips` first so the cameras have something to stream)"),
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
