//! The `gbgate` command line as a user meets it: `check` names the file,
//! line and fix for a bad topology, and accepts the demo's.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use integration::demo::{write_tree, TreeSpec};
use integration::harness::bin_dir;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin_dir().join("gbgate"))
        .args(["check", "--topology"])
        .arg(path)
        .output()
        .expect("gbgate binary (cargo build --workspace --bins)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn gbgate(args: &[&str]) -> (i32, String) {
    integration::harness::gbgate(args).unwrap()
}

#[test]
fn check_accepts_the_demo_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = write_tree(dir.path(), &TreeSpec::default()).unwrap();
    let (ok, text) = check(&tree.topology);
    assert!(ok, "{text}");
    assert!(text.contains("15 nodes"), "{text}");
}

#[test]
fn check_names_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "uplink_password = \"x\"\n").unwrap();
    let path = dir.path().join("topology.toml");
    // Line 9: a town whose parent is a city (two levels up), and an ID
    // with a letter at position 5.
    std::fs::write(
        &path,
        "[[node]]\nid = \"35010000002000000001\"\nname = \"City\"\nlevel = \"city\"\nsip = \"127.0.0.1:5060\"\ncredentials = \"c.toml\"\n\n[[node]]\nid = \"35010201002000000001\"\nname = \"Town\"\nlevel = \"town\"\nparent = \"35010000002000000001\"\nsip = \"127.0.0.1:5061\"\ncredentials = \"c.toml\"\n\n[[node]]\nid = \"3501X201002000000002\"\nname = \"Bad\"\nlevel = \"village\"\nsip = \"127.0.0.1:5062\"\ncredentials = \"c.toml\"\n",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    let file = path.display().to_string();
    assert!(text.contains(&format!("{file}:")), "names the file: {text}");
    assert!(text.contains("level"), "explains the level rule: {text}");
    assert!(
        text.contains("position 5"),
        "names the bad position: {text}"
    );
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TreeSpec {
        counties: 0,
        sip_base: 20460,
        http_base: 23480,
        ..TreeSpec::default()
    };
    let tree = write_tree(dir.path(), &spec).unwrap();
    let child = Command::new(bin_dir().join("gbgate"))
        .args(["run", "--json-logs", "--topology"])
        .arg(&tree.topology)
        .args(["--node", tree.root().id.as_str()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{text}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(text.contains("starting node"), "{text}");
}

/// `gbgate catalog | head` and the like: a reader that closes the pipe early
/// ends the command quietly, with status 0 and no panic message.
#[test]
fn closed_stdout_ends_printing_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TreeSpec {
        counties: 0,
        sip_base: 20560,
        http_base: 23580,
        ..TreeSpec::default()
    };
    let tree = write_tree(dir.path(), &spec).unwrap();
    let root = tree.root();
    /// Stops the node even when an assertion fails.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _node = Kill(
        Command::new(bin_dir().join("gbgate"))
            .args(["run", "--topology"])
            .arg(&tree.topology)
            .args(["--node", root.id.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{}/healthz", root.http);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ureq::get(&url).call().is_err() {
        assert!(std::time::Instant::now() < deadline, "node did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let http = root.http.to_string();
    let topology = tree.topology.display().to_string();
    let commands: [&[&str]; 4] = [
        &["catalog", "--http", &http],
        &["catalog", "--summary", "--http", &http],
        &["topology", "--http", &http],
        &["check", "--topology", &topology],
    ];
    for args in commands {
        // The shell waits before starting gbgate, so the read end of its
        // stdout is closed (below) before the first write: every write
        // then fails with EPIPE.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("sleep 0.2; exec \"$0\" \"$@\"")
            .arg(bin_dir().join("gbgate"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn policy_check_lists_every_bad_line_and_explain_names_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "p, dept:police, *, live, allow\n\
         p, dept:traffic, 3501*, teleport, allow\n\
         # a comment\n\
         p, team:x, 3501*, live, allow\n\
         p, dept:traffic, 35x1*, live, allow\n",
    )
    .unwrap();
    let file = bad.to_str().unwrap();
    let (code, out) = gbgate(&["policy", "check", file]);
    assert_eq!(code, 1, "{out}");
    for line in [2, 4, 5] {
        assert!(
            out.contains(&format!("bad.csv:{line}:")),
            "line {line}: {out}"
        );
    }
    assert!(!out.contains("bad.csv:1:"), "{out}");

    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "p, dept:traffic, 3501*, live, allow\n\
         p, dept:traffic, 35010201001310000009, *, deny\n\
         g, user:li, dept:traffic\n",
    )
    .unwrap();
    let file = good.to_str().unwrap();
    let (code, out) = gbgate(&["policy", "check", file]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 3 rules"), "{out}");
    let (code, out) = gbgate(&[
        "policy",
        "explain",
        "--policy",
        file,
        "user:li",
        "35010201001310000009",
        "live",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("Deny"), "{out}");
    assert!(out.contains("good.csv:2"), "{out}");
    assert!(
        out.contains("good.csv:1"),
        "the overridden allow is listed: {out}"
    );
    let (_, out) = gbgate(&[
        "policy",
        "explain",
        "--policy",
        file,
        "user:li",
        "35010201001310000001",
        "live",
    ]);
    assert!(out.starts_with("Allow"), "{out}");
}
