//! The gate's async edge: load the policy files, watch them (notify), and
//! put each valid edit in force through the node's loop. A file that does
//! not validate is refused with file, line and reason; the policy in force
//! keeps serving, and the refusal shows in /metrics and the admin API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use policy::{Policy, PolicyErrors};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::runtime::NodeHandle;

/// How long edits settle before a reload (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(200);

/// What the admin API shows about the policy.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus {
    /// The files watched.
    pub files: Vec<String>,
    /// Generation of the policy in force (1 for the first load).
    pub generation: u64,
    /// Rules in force.
    pub rules: usize,
    /// When the policy in force was loaded (Unix seconds).
    pub loaded_at: u64,
    /// The last refused edit's errors (`file:line: reason`), until a valid
    /// edit replaces it.
    pub refused: Vec<String>,
}

/// Shared, for the API to read.
pub type SharedStatus = Arc<Mutex<PolicyStatus>>;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Load `files` as generation `generation`.
pub fn load(files: &[PathBuf], generation: u64) -> Result<Policy, PolicyErrors> {
    let mut p = Policy::load(files)?;
    p.set_generation(generation);
    Ok(p)
}

fn lock(s: &SharedStatus) -> std::sync::MutexGuard<'_, PolicyStatus> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A status for the first policy.
pub fn initial_status(files: &[PathBuf], policy: &Policy) -> SharedStatus {
    Arc::new(Mutex::new(PolicyStatus {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        generation: policy.generation(),
        rules: policy.rule_count(),
        loaded_at: unix(SystemTime::now()),
        refused: Vec::new(),
    }))
}

/// One reload at a time: the watcher and an approved access request may
/// both reload, and each must put in force what it read.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Try to load `files` and put them in force on `node`; on failure keep
/// the old policy and record why. Returns true when the new policy is in
/// force.
pub async fn reload(files: &[PathBuf], node: &NodeHandle, status: &SharedStatus) -> bool {
    let _one = RELOADING.lock().await;
    let generation = lock(status).generation + 1;
    match load(files, generation) {
        Ok(p) => {
            let rules = p.rule_count();
            let p = Arc::new(p);
            if node
                .command(move |n, now| n.set_policy(Some(p), now))
                .await
                .is_err()
            {
                return false;
            }
            let mut s = lock(status);
            s.generation = generation;
            s.rules = rules;
            s.loaded_at = unix(SystemTime::now());
            s.refused.clear();
            metrics::counter!("gbgate_policy_reloads_total", "result" => "ok").increment(1);
            metrics::gauge!("gbgate_policy_rules").set(rules as f64);
            tracing::info!(generation, rules, "policy reloaded");
            true
        }
        Err(errors) => {
            let list: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
            for e in &list {
                tracing::error!(error = %e, "policy edit refused; the policy in force keeps serving");
            }
            metrics::counter!("gbgate_policy_reloads_total", "result" => "refused").increment(1);
            lock(status).refused = list;
            false
        }
    }
}

/// Watch the directories of `files` and reload on every change until
/// `shutdown`.
pub async fn watch(
    files: Vec<PathBuf>,
    node: NodeHandle,
    status: SharedStatus,
    shutdown: CancellationToken,
) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let wanted: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let names = wanted.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev.paths.iter().any(|p| names.iter().any(|n| n == p)) {
                let _ = tx.send(());
            }
        }
    })?;
    // Directories, not files: editors and `mv` replace the file itself.
    let mut dirs: Vec<PathBuf> = wanted
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            got = rx.recv() => {
                if got.is_none() {
                    return Ok(());
                }
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                reload(&files, &node, &status).await;
            }
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
