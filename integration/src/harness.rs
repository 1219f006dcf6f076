//! Start a topology as one `gbgate` process per node on 127.0.0.1, plus a
//! `gbsim` fleet per village, and watch it through the HTTP API.
//!
//! Tests give nodes fixed ports below 32768: Linux hands out client ports
//! from 32768–60999, and a test's own HTTP connection left in TIME-WAIT on
//! such a port stops a later node from listening there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gbgate::api::{CatalogEntry, CatalogPage, TopologyView};
use gbgate::gb::manscdp::CatalogItem;
use topology::GbId;

use crate::demo::{write_tree, Tree, TreeNode, TreeSpec};

/// Where the workspace's binaries are: next to the running test binary's
/// `deps/` folder, or `GBGATE_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("GBGATE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} not found; build it first with `cargo build --workspace --bins` (or set GBGATE_BIN_DIR)",
            p.display()
        );
    }
    Ok(p)
}

/// Simulated devices per village.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// IPCs per village.
    pub ipcs: usize,
    /// NVRs per village.
    pub nvrs: usize,
    /// Channels per NVR.
    pub channels: usize,
    /// Video the cameras stream when INVITEd (Annex-B clip or PS file);
    /// `None`: they refuse INVITEs.
    pub media: Option<PathBuf>,
    /// Send `media` (a PS file) with its video PES flag bytes removed
    /// (`gbsim --strip-pes-flags`).
    pub strip_pes_flags: bool,
    /// Live clips start mid-GOP, where a camera's running encoder would be
    /// (`gbsim --free-running`).
    pub free_running: bool,
    /// Each device raises an alarm on its first channel this often, in
    /// seconds (`gbsim --alarm-every`).
    pub alarm_every: Option<f64>,
    /// Channels whose live video no decoder can start (`gbsim
    /// --broken-video`).
    pub broken_video: Vec<String>,
}

impl Default for FleetSpec {
    /// 4 IPCs + 2 NVRs × 8 channels = 20 cameras per village.
    fn default() -> Self {
        FleetSpec {
            ipcs: 4,
            nvrs: 2,
            channels: 8,
            media: None,
            strip_pes_flags: false,
            free_running: false,
            alarm_every: None,
            broken_video: Vec::new(),
        }
    }
}

impl FleetSpec {
    /// One IP camera that streams `media` when asked.
    pub fn one_camera(media: PathBuf) -> FleetSpec {
        FleetSpec {
            ipcs: 1,
            nvrs: 0,
            channels: 0,
            media: Some(media),
            ..FleetSpec::default()
        }
    }

    /// Channels one fleet exposes.
    pub fn channels(&self) -> usize {
        self.ipcs + self.nvrs * self.channels
    }
}

/// A running tree.
pub struct Cluster {
    /// The generated files.
    pub tree: Tree,
    /// Device fleets per village.
    pub fleet: FleetSpec,
    spec: TreeSpec,
    dir: PathBuf,
    nodes: HashMap<GbId, Child>,
    sims: HashMap<GbId, Child>,
    /// Extra `gbgate run` arguments per node (policy, tokens, audit).
    args: HashMap<GbId, Vec<String>>,
    /// Token the harness's own API calls carry (nodes with a policy).
    bearer: Option<String>,
}

impl Cluster {
    /// Write the tree into `dir`, start every node and one fleet per village.
    pub fn start(dir: &Path, spec: TreeSpec, fleet: FleetSpec) -> Result<Cluster> {
        let mut c = Cluster::start_nodes(dir, spec, fleet)?;
        let villages: Vec<GbId> = c.tree.level("village").iter().map(|n| n.id).collect();
        for v in villages {
            c.start_fleet(&v)?;
        }
        Ok(c)
    }

    /// Write the tree into `dir` and start every node, but no fleets yet
    /// (benchmarks start them once the tree is linked).
    pub fn start_nodes(dir: &Path, spec: TreeSpec, fleet: FleetSpec) -> Result<Cluster> {
        Cluster::start_nodes_with(dir, spec, fleet, |_| Vec::new(), None)
    }

    /// [`Cluster::start_nodes`], each node run with the extra arguments
    /// `args` gives for it (after the tree is written, so they may name
    /// files beside it); the harness's API calls carry `bearer`.
    pub fn start_nodes_with(
        dir: &Path,
        spec: TreeSpec,
        fleet: FleetSpec,
        args: impl Fn(&TreeNode) -> Vec<String>,
        bearer: Option<String>,
    ) -> Result<Cluster> {
        let tree = write_tree(dir, &spec).context("writing the topology")?;
        let args = tree.nodes.iter().map(|n| (n.id, args(n))).collect();
        let mut c = Cluster {
            tree,
            fleet,
            spec,
            dir: dir.to_path_buf(),
            nodes: HashMap::new(),
            sims: HashMap::new(),
            args,
            bearer,
        };
        let ids: Vec<GbId> = c.tree.nodes.iter().map(|n| n.id).collect();
        for id in &ids {
            c.start_node(id)?;
        }
        for id in &ids {
            c.wait_http(id, Duration::from_secs(10))?;
        }
        Ok(c)
    }

    /// A tree run with a sharing policy: each node's policy file holds
    /// what `policy` writes for it, and every node reads the tokens file
    /// made of `tokens` (entries of `gbgate::api::auth::new_token`); the
    /// harness's own API calls carry `bearer`.
    pub fn start_with_policies(
        dir: &Path,
        spec: TreeSpec,
        fleet: FleetSpec,
        tokens: &[&str],
        policy: impl Fn(&TreeNode) -> String,
        bearer: &str,
    ) -> Result<Cluster> {
        let token_file = dir.join("tokens.toml");
        std::fs::write(&token_file, tokens.concat())?;
        let files = dir.to_path_buf();
        Cluster::start_nodes_with(
            dir,
            spec,
            fleet,
            |n| {
                let file = files.join(format!("policy-{}.csv", n.id));
                if let Err(e) = std::fs::write(&file, policy(n)) {
                    panic!("writing {}: {e}", file.display());
                }
                vec![
                    "--policy".into(),
                    file.display().to_string(),
                    "--tokens".into(),
                    token_file.display().to_string(),
                ]
            },
            Some(bearer.to_owned()),
        )
    }

    /// The policy file [`Self::start_with_policies`] wrote for `node`.
    pub fn policy_file(&self, node: &GbId) -> PathBuf {
        self.dir.join(format!("policy-{node}.csv"))
    }

    /// A node's process ID.
    pub fn pid(&self, id: &GbId) -> Option<u32> {
        self.nodes.get(id).map(Child::id)
    }

    /// Resident memory of a node's process, in KiB (Linux /proc).
    pub fn rss_kib(&self, id: &GbId) -> Option<u64> {
        crate::storm::rss_kib(self.nodes.get(id)?.id())
    }

    /// The process ID of a village's device fleet (`gbsim`).
    pub fn sim_pid(&self, village: &GbId) -> Option<u32> {
        self.sims.get(village).map(Child::id)
    }

    /// CPU time (user + system) a node's process has used so far (Linux
    /// /proc, in clock ticks of 1/100 s).
    pub fn cpu_seconds(&self, id: &GbId) -> Option<f64> {
        crate::storm::cpu_seconds(self.nodes.get(id)?.id())
    }

    /// True when every node with a parent is registered to it.
    pub fn linked(&self) -> bool {
        self.tree.nodes.iter().all(|n| {
            n.parent.is_none()
                || self
                    .topology(&n.id)
                    .ok()
                    .and_then(|t| t.parent)
                    .is_some_and(|p| p.state == "registered")
        })
    }

    fn node(&self, id: &GbId) -> Result<TreeNode> {
        self.tree
            .node(id)
            .cloned()
            .with_context(|| format!("{id} is not in the tree"))
    }

    /// Start (or restart) one node's process.
    pub fn start_node(&mut self, id: &GbId) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{id}.log")))?;
        let child = Command::new(bin("gbgate")?)
            .args(["run", "--topology"])
            .arg(&self.tree.topology)
            .args(["--node", id.as_str()])
            .args(self.args.get(id).into_iter().flatten())
            .env(
                "RUST_LOG",
                std::env::var("GBGATE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning gbgate")?;
        self.nodes.insert(*id, child);
        Ok(())
    }

    /// Kill one node abruptly (no unregister), as a power cut would.
    pub fn kill_node(&mut self, id: &GbId) {
        if let Some(mut c) = self.nodes.remove(id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop one node gracefully (SIGTERM: it unregisters from its parent).
    pub fn stop_node(&mut self, id: &GbId) {
        if let Some(mut c) = self.nodes.remove(id) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the device fleet of a village.
    pub fn start_fleet(&mut self, village: &GbId) -> Result<()> {
        let n = self.node(village)?;
        let log = std::fs::File::create(self.dir.join(format!("sim-{village}.log")))?;
        let child = Command::new(bin("gbsim")?)
            .args(["--server", &n.sip.to_string(), "--server-id", n.id.as_str()])
            .args(["--serial-base", &n.device_serial_base.to_string()])
            .args(["--ipcs", &self.fleet.ipcs.to_string()])
            .args(["--nvrs", &self.fleet.nvrs.to_string()])
            .args(["--channels", &self.fleet.channels.to_string()])
            .args(["--password", &self.spec.password])
            .args(["--keepalive", &self.spec.keepalive_secs.to_string()])
            .env("RUST_LOG", "info")
            .args(
                self.fleet
                    .media
                    .iter()
                    .flat_map(|m| [std::ffi::OsStr::new("--media"), m.as_os_str()]),
            )
            .args(self.fleet.strip_pes_flags.then_some("--strip-pes-flags"))
            .args(self.fleet.free_running.then_some("--free-running"))
            .args(
                self.fleet
                    .alarm_every
                    .iter()
                    .flat_map(|s| ["--alarm-every".to_owned(), s.to_string()]),
            )
            .args(
                self.fleet
                    .broken_video
                    .iter()
                    .flat_map(|id| ["--broken-video", id.as_str()]),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning gbsim")?;
        self.sims.insert(*village, child);
        Ok(())
    }

    /// The channels the fleet [`Self::start_fleet`] starts at `village`
    /// lists, built the way `gbsim` builds them: what a catalog at any tier
    /// must hold for them.
    pub fn expected_channels(&self, village: &GbId) -> Result<Vec<CatalogItem>> {
        let n = self.node(village)?;
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let cfg = crate::sim::FleetConfig {
            server: gbgate::sip::Peer::plain(gbgate::sip::Transport::Udp, n.sip),
            server_id: n.id,
            id_prefix: crate::sim::default_prefix(n.id),
            serial_base: n.device_serial_base,
            ipcs: self.fleet.ipcs,
            nvrs: self.fleet.nvrs,
            channels_per_nvr: self.fleet.channels,
            password: self.spec.password.clone(),
            keepalive: Duration::from_secs(60),
            expires: Duration::from_secs(3600),
            local: any,
            catalog_budget: 1300,
            register_window: 1,
            answer_window: 1,
            alarm_every: None,
        };
        let fleet = crate::sim::Fleet::new(cfg, Instant::now()).map_err(anyhow::Error::msg)?;
        Ok(fleet.channels().cloned().collect())
    }

    fn wait_http(&self, id: &GbId, timeout: Duration) -> Result<()> {
        let n = self.node(id)?;
        let url = format!("http://{}/healthz", n.http);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ureq::get(&url).call().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "node {id} did not answer {url} within {timeout:?}; see {}/{id}.log",
            self.dir.display()
        )
    }

    /// A node's whole catalog (all pages).
    pub fn catalog(&self, id: &GbId) -> Result<Vec<CatalogEntry>> {
        let n = self.node(id)?;
        let mut all = Vec::new();
        let mut url = format!("http://{}/api/v1/catalog?limit=10000", n.http);
        loop {
            let page: CatalogPage = self.get(&url).call()?.body_mut().read_json()?;
            all.extend(page.items);
            match page.next {
                Some(next) => {
                    url = format!("http://{}/api/v1/catalog?limit=10000&after={next}", n.http)
                }
                None => return Ok(all),
            }
        }
    }

    /// A GET carrying the harness's token, if it has one.
    pub fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let r = ureq::get(url);
        match &self.bearer {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// A node's topology view.
    pub fn topology(&self, id: &GbId) -> Result<TopologyView> {
        let n = self.node(id)?;
        let url = format!("http://{}/api/v1/topology", n.http);
        Ok(self.get(&url).call()?.body_mut().read_json()?)
    }

    /// Kill a village's device fleet abruptly: its cameras stop sending
    /// without BYE, as a power cut would.
    pub fn kill_fleet(&mut self, village: &GbId) {
        if let Some(mut c) = self.sims.remove(village) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The sum of a metric's samples at a node (all label sets whose text
    /// contains `labels`); 0 when absent.
    pub fn metric(&self, id: &GbId, name: &str, labels: &str) -> Result<f64> {
        let text = self.metrics(id)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
                (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
            })
            .sum())
    }

    /// The streams open at a node (`GET /api/v1/streams`).
    pub fn streams(&self, id: &GbId) -> Result<Vec<gbgate::streams::StreamInfo>> {
        let n = self.node(id)?;
        let url = format!("http://{}/api/v1/streams", n.http);
        Ok(self.get(&url).call()?.body_mut().read_json()?)
    }

    /// A node's Prometheus metrics text.
    pub fn metrics(&self, id: &GbId) -> Result<String> {
        let n = self.node(id)?;
        let url = format!("http://{}/metrics", n.http);
        Ok(ureq::get(&url).call()?.body_mut().read_to_string()?)
    }

    /// Poll `check` every 100 ms until it returns true or `timeout` passes.
    /// Returns the time it took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Cluster) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check(self) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "timed out after {timeout:?} waiting for {what}; logs in {}\n{}",
            self.dir.display(),
            self.log_digest()
        )
    }

    /// The last warnings of every log in the directory (its last lines when it
    /// has none): a failed wait in CI shows why without the files (a
    /// temporary directory is gone by then).
    pub fn log_digest(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let warns: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let name = log.file_name().map(|n| n.to_string_lossy().into_owned());
            out.push_str(&format!(
                "--- {} ({} lines, {} warnings)\n",
                name.unwrap_or_default(),
                text.lines().count(),
                warns.len()
            ));
            // Without warnings, the last lines say how far the process got.
            let tail: Vec<&str> = if warns.is_empty() {
                text.lines().collect()
            } else {
                warns
            };
            for l in tail.iter().rev().take(4).rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The directory holding the topology and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in self.sims.drain().chain(self.nodes.drain()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run the `gbgate` binary with `args`: its exit code and its stdout
/// followed by its stderr.
pub fn gbgate(args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(bin("gbgate")?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// An HTTP request to a node's API: `GET`, or `POST` with a JSON `body`;
/// `token` as bearer. Any status is an answer: the status and the body.
pub fn api_call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = match (method, body) {
        ("POST", b) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(b.unwrap_or(""))?
        }
        _ => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()?
        }
    };
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

/// A test clip `make clips` writes (`target/clips/<name>`). Panics, naming
/// the command to run, when it is missing: no media test can go on without.
pub fn test_clip(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/clips")
        .join(name);
    assert!(p.exists(), "{} is missing: run `make clips`", p.display());
    p
}
