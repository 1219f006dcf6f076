//! How registrations are told in the log. While they are few, each new
//! registrant gets its own line, which is what an operator of a few
//! hundred cameras reads. After a power cut tens of thousands a second
//! come back: one line each was a write(2) per registration on the node's
//! thread (165 MB of log in 20 s of a storm), so beyond a budget per
//! second they are counted and told in one summary line every
//! [`SUMMARY_PERIOD`].

use std::time::{Duration, Instant};

/// Lines of their own per second before registrations are only counted.
pub(super) const LINES_PER_SECOND: u32 = 20;

/// How often the count of registrations that had no line of their own is
/// told.
pub(super) const SUMMARY_PERIOD: Duration = Duration::from_secs(10);

/// What a summary line tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Summary {
    /// New registrants (or ones that came back) in the period.
    pub(super) fresh: u64,
    /// Of those, how many had no line of their own.
    pub(super) untold: u64,
    /// Refreshes of a registration that stood.
    pub(super) refreshed: u64,
    /// The period's length.
    pub(super) period: Duration,
}

/// The per-second budget and the period's counts.
#[derive(Debug)]
pub(super) struct RegistrationLog {
    second_started: Instant,
    lines_this_second: u32,
    period_started: Instant,
    fresh: u64,
    untold: u64,
    refreshed: u64,
}

impl RegistrationLog {
    /// Nothing counted yet.
    pub(super) fn new(now: Instant) -> Self {
        RegistrationLog {
            second_started: now,
            lines_this_second: 0,
            period_started: now,
            fresh: 0,
            untold: 0,
            refreshed: 0,
        }
    }

    /// Count a refreshed registration (never a line of its own).
    pub(super) fn refreshed(&mut self) {
        self.refreshed += 1;
    }

    /// Count a new registrant; true when it may have a line of its own.
    pub(super) fn fresh(&mut self, now: Instant) -> bool {
        self.fresh += 1;
        if now.duration_since(self.second_started) >= Duration::from_secs(1) {
            self.second_started = now;
            self.lines_this_second = 0;
        }
        if self.lines_this_second < LINES_PER_SECOND {
            self.lines_this_second += 1;
            true
        } else {
            self.untold += 1;
            false
        }
    }

    /// The summary due at `now`: once a period has passed and some
    /// registrant had no line of its own. The counts start again.
    pub(super) fn summary(&mut self, now: Instant) -> Option<Summary> {
        let period = now.duration_since(self.period_started);
        if period < SUMMARY_PERIOD {
            return None;
        }
        let summary = Summary {
            fresh: self.fresh,
            untold: self.untold,
            refreshed: self.refreshed,
            period,
        };
        self.period_started = now;
        self.fresh = 0;
        self.untold = 0;
        self.refreshed = 0;
        (summary.untold > 0).then_some(summary)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_few_registrants_each_get_a_line_and_no_summary() {
        let t0 = Instant::now();
        let mut log = RegistrationLog::new(t0);
        for i in 0..LINES_PER_SECOND {
            assert!(log.fresh(t0 + Duration::from_millis(u64::from(i))));
        }
        log.refreshed();
        assert_eq!(log.summary(t0 + SUMMARY_PERIOD), None);
    }

    #[test]
    fn a_storm_is_counted_and_told_once_a_period() {
        let t0 = Instant::now();
        let mut log = RegistrationLog::new(t0);
        let mut lines = 0;
        // 1,000 a second for 10 s.
        for ms in 0..10_000u64 {
            if log.fresh(t0 + Duration::from_millis(ms)) {
                lines += 1;
            }
            log.refreshed();
        }
        assert_eq!(lines, 10 * LINES_PER_SECOND);
        assert_eq!(log.summary(t0 + Duration::from_millis(9_999)), None);
        let s = log.summary(t0 + SUMMARY_PERIOD).unwrap();
        assert_eq!(s.fresh, 10_000);
        assert_eq!(s.untold, 10_000 - u64::from(lines));
        assert_eq!(s.refreshed, 10_000);
        assert_eq!(s.period, SUMMARY_PERIOD);
        // The counts start again.
        assert_eq!(log.summary(t0 + 2 * SUMMARY_PERIOD), None);
        assert!(log.fresh(t0 + 2 * SUMMARY_PERIOD));
    }
}
