//! The intact probe: how often each online camera registered to this node
//! has its video looked at, and what a look found. A camera counts intact
//! (完好) while it is online and its video was last found decodable; one
//! whose look finds no picture is marked VLOST in the catalog, and that
//! change travels up the tree like any ON/OFF, so the city's intact rate
//! needs no probe of its own.
//!
//! [`ProbePlan`] decides, sans-IO: each round takes the cameras online at
//! its start and spreads their looks evenly over the period, at most
//! `concurrency` at once; a round that overruns its period delays the
//! next. [`run`] is its I/O: it asks the node which cameras to look at,
//! has the stream manager look ([`crate::streams::StreamManager::probe_live`]:
//! a stream already open is looked at without opening anything), and
//! hands each verdict to the node.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use topology::GbId;

use crate::runtime::NodeHandle;
use crate::streams::{ProbeError, StreamManager};

/// The schedule of the intact probe's looks.
#[derive(Debug)]
pub struct ProbePlan {
    every: Duration,
    concurrency: usize,
    queue: VecDeque<GbId>,
    running: HashSet<GbId>,
    /// When the next look of this round may start.
    next_look: Instant,
    /// Time between two looks of this round.
    spacing: Duration,
    next_round: Instant,
}

/// What the plan wants now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start a round: call [`ProbePlan::start_round`] with the cameras to
    /// look at.
    StartRound,
    /// Look at this camera, then call [`ProbePlan::done`].
    Look(GbId),
    /// Nothing before this instant (`None`: until a look is done).
    Wait(Option<Instant>),
}

impl ProbePlan {
    /// A plan looking at each camera once per `every`, `concurrency` at a
    /// time. The first round starts one period after `now`: a node that
    /// just started has just heard each camera's state.
    pub fn new(every: Duration, concurrency: usize, now: Instant) -> ProbePlan {
        ProbePlan {
            every,
            concurrency: concurrency.max(1),
            queue: VecDeque::new(),
            running: HashSet::new(),
            next_look: now,
            spacing: Duration::ZERO,
            next_round: now + every,
        }
    }

    /// Begin a round over `cameras` at `now`.
    pub fn start_round(&mut self, cameras: Vec<GbId>, now: Instant) {
        self.spacing = self.every / u32::try_from(cameras.len().max(1)).unwrap_or(u32::MAX);
        self.queue = cameras.into();
        self.next_look = now;
        self.next_round = now + self.every;
    }

    /// What to do at `now`.
    pub fn step(&mut self, now: Instant) -> Step {
        if self.queue.is_empty() {
            if !self.running.is_empty() {
                return Step::Wait(None);
            }
            if now >= self.next_round {
                return Step::StartRound;
            }
            return Step::Wait(Some(self.next_round));
        }
        if self.running.len() >= self.concurrency {
            return Step::Wait(None);
        }
        if now < self.next_look {
            return Step::Wait(Some(self.next_look));
        }
        let Some(camera) = self.queue.pop_front() else {
            return Step::Wait(Some(self.next_round));
        };
        self.running.insert(camera);
        // A look that started late does not make the next one wait less
        // than the spacing: the pace stays even.
        self.next_look = now.max(self.next_look) + self.spacing;
        Step::Look(camera)
    }

    /// A look at `camera` is over.
    pub fn done(&mut self, camera: GbId) {
        self.running.remove(&camera);
    }

    /// Cameras left to look at in this round.
    pub fn left(&self) -> usize {
        self.queue.len() + self.running.len()
    }
}

/// Runs the intact probe of one node until the node stops: every
/// `every`, each online camera registered here, `concurrency` looks at a
/// time. Zero `every` never looks.
pub async fn run(
    node: NodeHandle,
    streams: Arc<StreamManager>,
    every: Duration,
    concurrency: usize,
) {
    if every.is_zero() {
        return;
    }
    let mut plan = ProbePlan::new(every, concurrency, Instant::now());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<GbId>();
    loop {
        match plan.step(Instant::now()) {
            Step::StartRound => {
                let Ok(cameras) = node.command(|n, _| n.probe_candidates()).await else {
                    return;
                };
                tracing::debug!(cameras = cameras.len(), "intact probe round");
                plan.start_round(cameras, Instant::now());
            }
            Step::Look(camera) => {
                let (node, streams, done) = (node.clone(), streams.clone(), done_tx.clone());
                tokio::spawn(async move {
                    look(&node, &streams, camera).await;
                    let _ = done.send(camera);
                });
            }
            Step::Wait(until) => {
                let sleep = async {
                    match until {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    Some(camera) = done_rx.recv() => plan.done(camera),
                    _ = sleep => {}
                }
            }
        }
    }
}

/// One look at `camera`, its verdict handed to the node.
async fn look(node: &NodeHandle, streams: &Arc<StreamManager>, camera: GbId) {
    let found = streams.probe_live(camera).await;
    let result = match &found {
        Ok(_) => "intact",
        Err(ProbeError::NotTried(_)) => "not_tried",
        Err(_) => "lost",
    };
    metrics::counter!("gbgate_intact_probes_total", "result" => result).increment(1);
    let intact = match found {
        Ok(picture) => {
            tracing::debug!(%camera, width = picture.width, height = picture.height, "intact probe: video decodes");
            true
        }
        Err(ProbeError::NotTried(e)) => {
            tracing::debug!(%camera, error = %e, "intact probe could not look");
            return;
        }
        Err(e) => {
            tracing::info!(%camera, error = %e, "intact probe: no decodable video");
            false
        }
    };
    let _ = node
        .command(move |n, now| n.video_checked(camera, intact, now))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(n: u32) -> GbId {
        format!("3501020100131{n:07}").parse().unwrap()
    }

    #[test]
    fn a_round_spreads_its_looks_over_the_period_at_most_n_at_once() {
        let t0 = Instant::now();
        let every = Duration::from_secs(100);
        let mut p = ProbePlan::new(every, 2, t0);
        assert_eq!(
            p.step(t0),
            Step::Wait(Some(t0 + every)),
            "first round after a period"
        );
        let t1 = t0 + every;
        assert_eq!(p.step(t1), Step::StartRound);
        p.start_round((0..4).map(cam).collect(), t1);
        // 4 cameras over 100 s: one every 25 s.
        assert_eq!(p.step(t1), Step::Look(cam(0)));
        assert_eq!(p.step(t1), Step::Wait(Some(t1 + Duration::from_secs(25))));
        let t2 = t1 + Duration::from_secs(25);
        assert_eq!(p.step(t2), Step::Look(cam(1)));
        // Two running: the third waits for one to finish, however late.
        let t3 = t1 + Duration::from_secs(60);
        assert_eq!(p.step(t3), Step::Wait(None));
        p.done(cam(0));
        assert_eq!(p.step(t3), Step::Look(cam(2)));
        assert_eq!(p.step(t3), Step::Wait(None));
        p.done(cam(1));
        p.done(cam(2));
        assert_eq!(p.step(t3), Step::Wait(Some(t3 + Duration::from_secs(25))));
        let t4 = t3 + Duration::from_secs(25);
        assert_eq!(p.step(t4), Step::Look(cam(3)));
        assert_eq!(p.left(), 1);
        // The round's last look still runs: no new round meanwhile.
        assert_eq!(p.step(t1 + every), Step::Wait(None));
        p.done(cam(3));
        assert_eq!(p.step(t4), Step::Wait(Some(t1 + every)));
        assert_eq!(p.step(t1 + every), Step::StartRound);
    }

    #[test]
    fn an_empty_round_waits_for_the_next() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut p = ProbePlan::new(every, 4, t0);
        p.start_round(Vec::new(), t0 + every);
        assert_eq!(p.step(t0 + every), Step::Wait(Some(t0 + every * 2)));
        assert_eq!(p.step(t0 + every * 2), Step::StartRound);
    }
}
