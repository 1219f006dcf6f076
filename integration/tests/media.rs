//! The media plane end to end: live and playback video from a village
//! camera to viewers at the city, through four tiers of `gbgate`
//! processes, checked with ffprobe/ffmpeg (decoders we did not write).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration::demo::TreeSpec;
use integration::harness::{Cluster, FleetSpec};

fn clip(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/clips")
        .join(name);
    assert!(p.exists(), "{} missing: run `make clips`", p.display());
    p
}

/// A 4-tier chain (city ← county ← town ← village) with one camera.
fn chain(dir: &std::path::Path, sip_base: u16, http_base: u16, media: PathBuf) -> Cluster {
    let spec = TreeSpec {
        counties: 1,
        towns: 1,
        villages: 1,
        sip_base,
        http_base,
        keepalive_secs: 2,
        linger_secs: 2,
        media_timeout_secs: 3,
        ..TreeSpec::default()
    };
    let fleet = FleetSpec {
        ipcs: 1,
        nvrs: 0,
        channels: 0,
        media: Some(media),
    };
    let c = Cluster::start(dir, spec, fleet).expect("cluster starts");
    let city = c.tree.root().id;
    c.wait_for("the camera at the city", Duration::from_secs(20), |c| {
        c.catalog(&city)
            .map(|cat| {
                cat.iter()
                    .any(|e| e.device_id.get(10..13) == Some("131") && e.status == "ON")
            })
            .unwrap_or(false)
    })
    .expect("catalog reaches the city");
    c
}

fn camera(c: &Cluster) -> String {
    let city = c.tree.root().id;
    c.catalog(&city)
        .unwrap()
        .into_iter()
        .find(|e| e.device_id.get(10..13) == Some("131"))
        .unwrap()
        .device_id
}

#[test]
fn smoke_live_flv() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(dir.path(), 26060, 29080, clip("h264.h264"));
    let cam = camera(&c);
    let url = format!("http://{}/live/{cam}.flv", c.tree.root().http);
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-read_intervals",
            "%+5",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
            "-of",
            "compact",
            &url,
        ])
        .output()
        .unwrap();
    eprintln!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(dir);
}
