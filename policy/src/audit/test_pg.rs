//! A throwaway PostgreSQL cluster for tests and benchmarks (also included
//! by `policy/tests/audit_bench.rs`).
//!
//! One cluster per test process, started on first use: data under
//! `target/pg/<binary>-<pid>`, unix socket only (no TCP) in a directory of
//! its own, so concurrent test binaries never meet. A guardian shell reads a
//! pipe whose write end this process holds until it exits; at EOF (normal
//! exit, panic or kill -9) it stops the server and removes the files.
//! Starting fails loudly (panics) rather than skipping: `make deps`
//! installs PostgreSQL.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A running cluster.
pub struct PgCluster {
    sock: PathBuf,
    /// The guardian, whose stdin pipe stays open for the life of the
    /// process: it stops the cluster when the pipe closes. Never waited for:
    /// it outlives us by design.
    _guardian: Mutex<Child>,
}

const PORT: u16 = 5432;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first call.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(PgCluster::start)
}

/// A new, empty database on the process's cluster: its connection string.
pub fn fresh_db() -> String {
    cluster().fresh_db()
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let v: u32 = d.file_name().to_str()?.parse().ok()?;
            let bin = d.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL not found under /usr/lib/postgresql/*/bin (run `make deps`, \
             or set PG_BIN)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The user the server runs as when we are root (PostgreSQL refuses root).
fn server_user() -> &'static str {
    let has = |u: &str| {
        Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("postgres") {
        "postgres"
    } else {
        "nobody"
    }
}

/// A command running `bin` as the server user when we are root.
fn pg_command(bin: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", server_user(), "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut c: Command, what: &str, log: &Path) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        let server_log = fs::read_to_string(log).unwrap_or_default();
        panic!(
            "{what} failed ({}):\n{}\n{}\nserver log:\n{server_log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `target/` of this build, from the test binary's path
/// (`target/<profile>/deps/<binary>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown")
        .args(["-R", user])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {} {user} failed", path.display());
}

/// Stops and removes clusters of test processes that are gone (their
/// guardian was killed too).
fn remove_stale(parent: &Path, bin: &Path, root: bool) {
    let Ok(dirs) = fs::read_dir(parent) else {
        return;
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = d.path().join("data");
        if data.join("postmaster.pid").exists() {
            let mut c = pg_command(&bin.join("pg_ctl"), root);
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
        }
        let _ = fs::remove_dir_all(d.path());
        let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("gbgate-pg-{pid}")));
    }
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = pg_bin();
        let root = is_root();
        let pid = std::process::id();
        let exe = std::env::current_exe().expect("current_exe");
        let stem = exe
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "test".into());
        let parent = target_dir().join("pg");
        fs::create_dir_all(&parent).expect("create target/pg");
        remove_stale(&parent, &bin, root);
        let dir = parent.join(format!("{stem}-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        // Unix socket paths are limited to ~107 bytes: keep it short.
        let sock = std::env::temp_dir().join(format!("gbgate-pg-{pid}"));
        let _ = fs::remove_dir_all(&sock);
        fs::create_dir_all(&dir).expect("create cluster dir");
        fs::create_dir_all(&sock).expect("create socket dir");
        let data = dir.join("data");
        let log = dir.join("server.log");
        if root {
            // The server user must reach the directory through target/.
            let user = server_user();
            chown(&dir, user);
            chown(&sock, user);
        }

        let mut initdb = pg_command(&bin.join("initdb"), root);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        run(initdb, "initdb", &log);

        // Stop the server and remove its files when this process's end
        // closes the pipe, however it ends.
        let stop = format!(
            "read _; {runuser}'{pg_ctl}' -D '{data}' -m immediate stop; rm -rf '{dir}' '{sock}'",
            runuser = if root {
                format!("runuser -u {} -- ", server_user())
            } else {
                String::new()
            },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
            sock = sock.display(),
        );
        let guardian_log = fs::File::create(dir.join("guardian.log")).expect("guardian log");
        let guardian_err = guardian_log.try_clone().expect("guardian log");
        let guardian = Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::piped())
            .stdout(guardian_log)
            .stderr(guardian_err)
            .spawn()
            .expect("spawn guardian");

        let mut pg_ctl = pg_command(&bin.join("pg_ctl"), root);
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-k {} -c listen_addresses='' -p {PORT}",
                sock.display()
            ))
            .arg("start");
        run(pg_ctl, "pg_ctl start", &log);
        PgCluster {
            sock,
            _guardian: Mutex::new(guardian),
        }
    }

    /// The connection string of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={db}",
            self.sock.display()
        )
    }

    /// Creates a new, empty database and returns its connection string.
    pub fn fresh_db(&self) -> String {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!("audit_{}_{n}", std::process::id());
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(&name)
    }
}
