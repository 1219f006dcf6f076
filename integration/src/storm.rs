//! The REGISTER storm: sipp, a SIP tool we did not write, offers digest
//! REGISTERs from many distinct devices at one rate (REGISTER → 401 →
//! REGISTER with Authorization → 200) to a registrar pinned to one core,
//! sipp itself on the other. The same runner measures gbgate and Kamailio
//! (Debian's package, `integration/kamailio/registrar.cfg`): what held,
//! how fast each leg was answered, and what it cost.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The digest password every storm device uses (both registrars).
pub const STORM_PASSWORD: &str = "storm-pass-1";

/// How devices reach the registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormTransport {
    /// One UDP socket for all devices.
    Udp,
    /// TCP: one connection carrying every device's REGISTERs. (sipp's
    /// connection-per-call mode fails on its own at a few hundred calls a
    /// second, so it cannot load a registrar; connection set-up is not
    /// what this step measures.)
    Tcp,
}

impl StormTransport {
    /// As the figures name it.
    pub fn name(self) -> &'static str {
        match self {
            StormTransport::Udp => "udp",
            StormTransport::Tcp => "tcp",
        }
    }
}

/// One step of a storm.
#[derive(Debug, Clone)]
pub struct StormSpec {
    /// The registrar.
    pub target: SocketAddr,
    /// Its 20-digit ID (request URI) and domain (realm, From/To host).
    pub node: String,
    /// The SIP domain.
    pub domain: String,
    /// Transport.
    pub transport: StormTransport,
    /// Registrations offered per second.
    pub rate: u32,
    /// How long.
    pub duration: Duration,
    /// Distinct device IDs, cycled through.
    pub devices: usize,
    /// Where in the pool this step starts (steps go on where the last
    /// left off, so a step's devices are fresh until the pool wraps).
    pub offset: usize,
    /// The first device ID (the following ones count up from it; 20
    /// digits do not fit a u64).
    pub first_device: u128,
    /// Answer the registrar's Catalog and DeviceInfo queries as devices do.
    pub answer_queries: bool,
    /// The registrar's processes (CPU is summed over them).
    pub server_pids: Vec<u32>,
    /// The core sipp runs on.
    pub sipp_cpu: usize,
    /// Where sipp's files go.
    pub dir: PathBuf,
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StormResult {
    /// Registrations offered per second.
    pub rate: u32,
    /// Registrations started.
    pub offered: u64,
    /// Registrations that got their 200.
    pub succeeded: u64,
    /// Registrations that failed (an error answer, or none in time).
    pub failed: u64,
    /// Requests sipp had to send again (UDP; a lost or late answer).
    pub retransmissions: u64,
    /// 99th percentile of REGISTER → 401.
    pub p99_challenge: Duration,
    /// 99th percentile of REGISTER with Authorization → 200.
    pub p99_register: Duration,
    /// CPU the registrar used during the step, seconds.
    pub server_cpu: f64,
    /// CPU sipp used during the step, seconds: near the whole step's
    /// length, the generator's core was full and its own delays count in
    /// the response times.
    pub generator_cpu: f64,
    /// sipp's highest share of its core over any 5 s of the step.
    pub generator_peak: f64,
    /// How long the step took.
    pub wall: Duration,
}

/// sipp's share of its core (over 5 s) above which it is the limit: it is
/// one thread, and over loopback the kernel's work for what it sends runs
/// on its core too.
pub const GENERATOR_BOUND: f64 = 0.95;

/// The most either leg's p99 may take for a step to count as clean.
pub const CLEAN_P99: Duration = Duration::from_millis(10);

/// jemalloc from Debian's libjemalloc2 (`make bench-deps`), preloaded into
/// sipp. Under glibc's malloc sipp's cost per call grows through a step:
/// `perf record` of sipp at 32,000/s over TCP had malloc, free,
/// unlink_chunk and malloc_consolidate at 6 % of its samples 10-30 s in
/// and 20 % 90-120 s in, when its core filled.
fn jemalloc() -> Result<PathBuf> {
    let path = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/libjemalloc.so.2",
        std::env::consts::ARCH
    ));
    if !path.exists() {
        bail!(
            "{} is missing: make bench-deps installs libjemalloc2",
            path.display()
        );
    }
    Ok(path)
}

impl StormResult {
    /// Every registration succeeded, none was retransmitted, and both legs'
    /// p99 stayed within [`CLEAN_P99`].
    pub fn clean(&self) -> bool {
        self.failed == 0
            && self.retransmissions == 0
            && self.succeeded == self.offered
            && self.offered > 0
            && self.p99_challenge <= CLEAN_P99
            && self.p99_register <= CLEAN_P99
    }

    /// CPU seconds per second the registrar spent per 1,000 registrations
    /// a second (0.25: a quarter of a core for each 1,000/s).
    pub fn cpu_per_1000(&self) -> f64 {
        let per_sec = self.succeeded as f64 / self.wall.as_secs_f64();
        if per_sec == 0.0 {
            return f64::NAN;
        }
        (self.server_cpu / self.wall.as_secs_f64()) / (per_sec / 1000.0)
    }

    /// The share of its core sipp used over the step.
    pub fn generator_core(&self) -> f64 {
        self.generator_cpu / self.wall.as_secs_f64()
    }

    /// True when sipp filled its core for 5 s or more: a step that is not
    /// clean then says more about the generator than the registrar.
    pub fn generator_bound(&self) -> bool {
        self.generator_peak > GENERATOR_BOUND
    }

    /// One line of figures.
    pub fn line(&self) -> String {
        format!(
            "rate={} offered={} ok={} failed={} retrans={} p99_401_ms={:.2} p99_200_ms={:.2} cpu_per_1000={:.3} sipp_core={:.2} sipp_peak_5s={:.2} clean={}",
            self.rate,
            self.offered,
            self.succeeded,
            self.failed,
            self.retransmissions,
            self.p99_challenge.as_secs_f64() * 1000.0,
            self.p99_register.as_secs_f64() * 1000.0,
            self.cpu_per_1000(),
            self.generator_core(),
            self.generator_peak,
            self.clean()
        )
    }
}

/// CPU seconds (user + system) used so far by `pid` (Linux /proc).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds used so far by this process's children that have been
/// waited for (cutime + cstime in /proc/self/stat): the load generator's
/// CPU once its step is over.
fn reaped_children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident set size of `pid` in KiB (Linux /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Proportional set size of `pid` in KiB: shared pages counted once across
/// a multi-process server like Kamailio (Linux smaps_rollup).
pub fn pss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The processes in process group `pgid` (a server and the children it
/// forked).
pub fn process_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        // Fields after the name: state, ppid, pgrp.
        if rest.split_whitespace().nth(2) == Some(&pgid.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// Pin every thread of `pid` to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    if !st.success() {
        bail!("taskset could not pin {pid}");
    }
    Ok(())
}

/// Kamailio as a digest registrar on `port`, its processes pinned to `cpu`.
pub struct Kamailio {
    child: Child,
    /// Its processes.
    pub pids: Vec<u32>,
}

impl Kamailio {
    /// Start it with the realm `domain` and [`STORM_PASSWORD`]; `children`
    /// worker processes per transport.
    pub fn start(
        dir: &Path,
        port: u16,
        domain: &str,
        cpu: usize,
        children: usize,
    ) -> Result<Kamailio> {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("kamailio/registrar.cfg"),
        )?;
        let cfg = template
            .replace("@PORT@", &port.to_string())
            .replace("@PASSWORD@", STORM_PASSWORD)
            .replace("@REALM@", domain)
            .replace("@CHILDREN@", &children.to_string());
        let path = dir.join("kamailio.cfg");
        std::fs::write(&path, cfg)?;
        let log = std::fs::File::create(dir.join("kamailio.log"))?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "kamailio"])
            .arg("-f")
            .arg(&path)
            .args(["-DD", "-E", "-m", "256", "-M", "16"])
            .args(["-P", &dir.join("kamailio.pid").display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("kamailio (make bench-deps installs it)")?;
        let pgid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Ready once the UDP port answers: an OPTIONS gets its 404.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        loop {
            let probe = format!(
                "OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKprobe{}\r\nFrom: <sip:probe@x>;tag=1\r\nTo: <sip:probe@x>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                sock.local_addr()?,
                Instant::now().elapsed().as_nanos()
            );
            sock.send_to(probe.as_bytes(), ("127.0.0.1", port))?;
            let mut buf = [0u8; 2048];
            if sock.recv_from(&mut buf).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default();
                bail!("kamailio did not answer on {port}:\n{log}");
            }
        }
        Ok(Kamailio {
            child,
            pids: process_group(pgid),
        })
    }

    /// Its PSS summed over its processes, KiB.
    pub fn pss_kib(&self) -> u64 {
        self.pids.iter().filter_map(|p| pss_kib(*p)).sum()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // The main process and the children it forked, each by its own
        // PID (never a group: a wrong group ID would take the caller too).
        for pid in &self.pids {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write sipp's injection file: the pool of `devices` device IDs from
/// `first`, starting at `offset`, each with [`STORM_PASSWORD`].
fn write_devices(path: &Path, first: u128, devices: usize, offset: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "SEQUENTIAL")?;
    for i in 0..devices {
        let id = first + ((offset + i) % devices) as u128;
        writeln!(f, "{id:020};{STORM_PASSWORD}")?;
    }
    f.flush()?;
    Ok(())
}

/// Run one step: sipp at `spec.rate` for `spec.duration`, then its
/// figures.
pub fn run(spec: &StormSpec) -> Result<StormResult> {
    let dir = &spec.dir;
    std::fs::create_dir_all(dir)?;
    let inf = dir.join("devices.csv");
    write_devices(&inf, spec.first_device, spec.devices, spec.offset)?;
    let scen = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp");
    let calls = u64::from(spec.rate) * spec.duration.as_secs();
    let t = match spec.transport {
        StormTransport::Udp => "u1",
        StormTransport::Tcp => "t1",
    };
    let cpu0: f64 = spec
        .server_pids
        .iter()
        .filter_map(|p| cpu_seconds(*p))
        .sum();
    let generator0 = reaped_children_cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut cmd = Command::new("taskset");
    cmd.env("LD_PRELOAD", jemalloc()?)
        .args(["-c", &spec.sipp_cpu.to_string(), "sipp"])
        .arg(spec.target.to_string())
        .arg("-sf")
        .arg(scen.join("register_storm.xml"))
        .arg("-inf")
        .arg(&inf)
        .args(["-t", t, "-i", "127.0.0.1"])
        .args(["-key", "node", &spec.node, "-key", "domain", &spec.domain])
        .args(["-r", &spec.rate.to_string(), "-rp", "1000"])
        .args(["-m", &calls.to_string()])
        // In flight at most 5 s worth: a registrar that stalls is a
        // failure, not a backlog sipp hides.
        .args(["-l", &(spec.rate * 5).max(100).to_string()])
        .args(["-timeout", &format!("{}s", spec.duration.as_secs() + 60)])
        .args(["-recv_timeout", "5000", "-max_retrans", "5"])
        // One socket stands for 90,000 devices, each of which would have
        // its own buffer: sipp's default 64 KiB would drop a burst of
        // answers and blame the registrar with a retransmission.
        .args(["-buff_size", "4194304"])
        .args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"])
        // Response times are kept in memory and written every 1,000
        // calls: writing each call's (`-rtt_freq 1`) was a write(2) per
        // registration on the generator's core.
        .args(["-trace_rtt", "-rtt_freq", "1000"])
        // sipp keeps every ended call for 33 s by default, only to name it
        // in the log should a late message come: a million of them at
        // 32,000/s, each a map entry and a timer on the generator's core.
        .args(["-deadcall_wait", "0"])
        .args(["-nostdin", "-trace_err"]);
    if spec.answer_queries {
        cmd.arg("-oocsf").arg(scen.join("register_storm_ooc.xml"));
    }
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("sipp (make deps installs sip-tester)")?;
    // sipp's CPU each second (taskset execs it, so the pid is sipp's): an
    // average hides a generator whose cost grows until it fills its core
    // at the end of a step.
    let mut samples = vec![cpu_seconds(child.id()).unwrap_or(0.0)];
    let mut sampled = Instant::now();
    while child.try_wait()?.is_none() {
        // Checked often, so the step's wall time ends when sipp does.
        std::thread::sleep(Duration::from_millis(50));
        if sampled.elapsed() >= Duration::from_secs(1) {
            sampled += Duration::from_secs(1);
            if let Some(cpu) = cpu_seconds(child.id()) {
                samples.push(cpu);
            }
        }
    }
    let generator_peak = samples
        .windows(6)
        .filter_map(|w| Some((w.last()? - w.first()?) / 5.0))
        .fold(0.0, f64::max);
    let wall = started.elapsed();
    let cpu1: f64 = spec
        .server_pids
        .iter()
        .filter_map(|p| cpu_seconds(*p))
        .sum();
    let generator_cpu = reaped_children_cpu_seconds().unwrap_or(0.0) - generator0;
    // sipp exits non-zero when any call failed: the figures say how many.
    let stats = read_stats(&dir.join("stat.csv"))?;
    let (challenge, register) = read_rtts(dir)?;
    Ok(StormResult {
        rate: spec.rate,
        offered: stats.0,
        succeeded: stats.1,
        failed: stats.2,
        retransmissions: stats.3,
        p99_challenge: percentile(challenge, 0.99),
        p99_register: percentile(register, 0.99),
        server_cpu: cpu1 - cpu0,
        generator_cpu,
        generator_peak,
        wall,
    })
}

/// Total calls, successful, failed, retransmissions: the cumulative
/// columns of sipp's last statistics line.
fn read_stats(path: &Path) -> Result<(u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        bail!("no statistics in {}", path.display());
    };
    if lines.len() < 2 {
        bail!("no statistics line in {}", path.display());
    }
    let header: Vec<&str> = first.split(';').collect();
    let last: Vec<&str> = last.split(';').collect();
    let col = |name: &str| -> Result<u64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow!("no column {name} in sipp's stats"))?;
        Ok(last.get(i).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
    };
    Ok((
        col("TotalCallCreated")?,
        col("SuccessfulCall(C)")?,
        col("FailedCall(C)")?,
        col("Retransmissions(C)")?,
    ))
}

/// Response times of rtd 1 and rtd 2 from sipp's `_rtt.csv`.
fn read_rtts(dir: &Path) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut one = Vec::new();
    let mut two = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if !e.file_name().to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        for l in text.lines().skip(1) {
            // date_ms;date_s?;response_time_ms;rtd_no (layout varies by
            // version: the last two fields are the time and the rtd).
            let f: Vec<&str> = l.split(';').filter(|s| !s.is_empty()).collect();
            if f.len() < 2 {
                continue;
            }
            let Ok(ms) = f[f.len() - 2].trim().parse::<f64>() else {
                continue;
            };
            let d = Duration::from_secs_f64(ms / 1000.0);
            match f[f.len() - 1].trim() {
                "1" => one.push(d),
                "2" => two.push(d),
                _ => {}
            }
        }
    }
    Ok((one, two))
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::MAX;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}
