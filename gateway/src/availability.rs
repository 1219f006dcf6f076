//! Availability: how long each channel was online, and online with intact
//! video, over a window, and the online and intact rates per county, per
//! node below, per department, from the status changes a node records as
//! its catalog hears them (pushed ON/OFF/VLOST from below: the city
//! computes it for the whole tree without polling a camera; VLOST comes
//! from the camera itself or from the intact probe of the node it
//! registers to). Pure functions over the recorded history; the store and
//! the HTTP and CLI edges are elsewhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use policy::audit::StatusChange;

/// One channel's time over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTime {
    /// The channel's ID.
    pub channel: String,
    /// The registrant it came through when last heard of.
    pub via: String,
    /// Milliseconds it was online in the window.
    pub online_ms: u64,
    /// Milliseconds it was online with intact video (no VLOST/DEFECT).
    pub intact_ms: u64,
    /// Milliseconds its state was known in the window (from its first
    /// recorded change on; a channel added mid-window counts from then).
    pub known_ms: u64,
}

/// The online time of every channel in `history` over `[from_ms, to_ms)`.
/// `history` is what [`policy::audit::AuditStore::status_history`] returns:
/// ordered by channel, then time, with each channel's last change before
/// the window first.
pub fn channel_times(history: &[StatusChange], from_ms: u64, to_ms: u64) -> Vec<ChannelTime> {
    let mut out: Vec<ChannelTime> = Vec::new();
    // (channel, since, online, intact) of the channel being read.
    type Open = Option<(usize, u64, bool, bool)>;
    let mut open: Open = None;
    let close = |out: &mut Vec<ChannelTime>, open: Open, until: u64| {
        if let Some((i, since, online, intact)) = open {
            let span = until.saturating_sub(since);
            if let Some(t) = out.get_mut(i) {
                t.known_ms += span;
                if online {
                    t.online_ms += span;
                }
                if intact {
                    t.intact_ms += span;
                }
            }
        }
    };
    for c in history {
        let at = c.at_ms.clamp(from_ms, to_ms);
        let same = out.last().is_some_and(|t| t.channel == c.channel);
        if same {
            close(&mut out, open, at);
            if let Some(t) = out.last_mut() {
                t.via.clone_from(&c.via);
            }
        } else {
            close(&mut out, open, to_ms);
            out.push(ChannelTime {
                channel: c.channel.clone(),
                via: c.via.clone(),
                online_ms: 0,
                intact_ms: 0,
                known_ms: 0,
            });
        }
        open = Some((out.len() - 1, at, c.online, c.is_intact()));
    }
    close(&mut out, open, to_ms);
    out.retain(|t| t.known_ms > 0);
    out
}

/// How channels are grouped in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The county: the first 6 digits of the channel's ID (its civil code).
    County,
    /// The registrant each channel came through (at the city: the county
    /// node; at a village: the device).
    Node,
    /// Each department that may see the channel (a channel counts for
    /// every department that sees it).
    Department,
}

impl GroupBy {
    /// Reads `county`, `node` or `department`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "county" => Some(GroupBy::County),
            "node" => Some(GroupBy::Node),
            "department" => Some(GroupBy::Department),
            _ => None,
        }
    }
}

/// The online and intact rates of one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct GroupRate {
    /// The county code, node ID or `dept:<name>`.
    pub group: String,
    /// Channels in the group with a known state in the window.
    pub channels: u32,
    /// Seconds online, summed over the channels.
    pub online_seconds: f64,
    /// Seconds online with intact video, summed over the channels.
    pub intact_seconds: f64,
    /// Seconds known, summed over the channels.
    pub known_seconds: f64,
    /// `online_seconds / known_seconds`, 0–1 (在线率).
    pub online_rate: f64,
    /// `intact_seconds / known_seconds`, 0–1 (完好率): online, and the
    /// video decoded when last looked at.
    pub intact_rate: f64,
}

/// Sums `times` per group; `groups` names the groups of a channel (none
/// leaves it out). Groups come sorted by name.
pub fn group_rates<'a>(
    times: &'a [ChannelTime],
    mut groups: impl FnMut(&'a ChannelTime) -> Vec<String>,
) -> Vec<GroupRate> {
    let mut sums: BTreeMap<String, (u32, u64, u64, u64)> = BTreeMap::new();
    for t in times {
        for g in groups(t) {
            let s = sums.entry(g).or_default();
            s.0 += 1;
            s.1 += t.online_ms;
            s.2 += t.intact_ms;
            s.3 += t.known_ms;
        }
    }
    let rate = |part: u64, known: u64| {
        if known == 0 {
            0.0
        } else {
            part as f64 / known as f64
        }
    };
    sums.into_iter()
        .map(|(group, (channels, online, intact, known))| GroupRate {
            group,
            channels,
            online_seconds: online as f64 / 1000.0,
            intact_seconds: intact as f64 / 1000.0,
            known_seconds: known as f64 / 1000.0,
            online_rate: rate(online, known),
            intact_rate: rate(intact, known),
        })
        .collect()
}

/// Rates per county or per node below; `None` for departments, whose
/// groups only the node's policy gives (pass them to [`group_rates`]).
pub fn rates_by_place(times: &[ChannelTime], by: GroupBy) -> Option<Vec<GroupRate>> {
    match by {
        GroupBy::County => Some(group_rates(times, |t| {
            county_of(&t.channel).into_iter().collect()
        })),
        GroupBy::Node => Some(group_rates(times, |t| vec![t.via.clone()])),
        GroupBy::Department => None,
    }
}

/// The county of a channel: its ID's first 6 digits.
pub fn county_of(channel: &str) -> Option<String> {
    channel.get(..6).map(str::to_owned)
}

/// The report as CSV: a header, then one line per group.
pub fn to_csv(title: &str, rates: &[GroupRate]) -> String {
    let mut out = format!(
        "# {title}\ngroup,channels,online_seconds,intact_seconds,known_seconds,online_rate,intact_rate\n"
    );
    for r in rates {
        let _ = writeln!(
            out,
            "{},{},{:.3},{:.3},{:.3},{:.6},{:.6}",
            r.group,
            r.channels,
            r.online_seconds,
            r.intact_seconds,
            r.known_seconds,
            r.online_rate,
            r.intact_rate
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one HTML page: a table and a bar chart (inline SVG, no
/// script), readable offline and printable.
pub fn to_html(title: &str, rates: &[GroupRate]) -> String {
    let mut rows = String::new();
    let mut bars = String::new();
    let bar_h = 22;
    for (i, r) in rates.iter().enumerate() {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}%</td><td>{:.2}%</td></tr>",
            escape(&r.group),
            r.channels,
            r.online_seconds / 3600.0,
            r.online_rate * 100.0,
            r.intact_rate * 100.0
        );
        let y = i * (bar_h + 6);
        let w = (r.online_rate * 600.0).round();
        let _ = write!(
            bars,
            "<text x=\"0\" y=\"{ty}\" font-size=\"13\">{g}</text>\
             <rect x=\"180\" y=\"{y}\" width=\"{w}\" height=\"{bar_h}\" fill=\"#2e7d32\"/>\
             <rect x=\"{rx}\" y=\"{y}\" width=\"{rw}\" height=\"{bar_h}\" fill=\"#c62828\"/>\
             <text x=\"790\" y=\"{ty}\" font-size=\"13\">{p:.2}%</text>",
            ty = y + 16,
            g = escape(&r.group),
            rx = 180.0 + w,
            rw = 600.0 - w,
            p = r.online_rate * 100.0
        );
    }
    let height = rates.len() * (bar_h + 6) + 4;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font:14px sans-serif;margin:2em}}td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}</style>\
         </head><body><h1>{t}</h1>\
         <svg width=\"860\" height=\"{height}\" role=\"img\" aria-label=\"online rate per group\">{bars}</svg>\
         <table><tr><th>group</th><th>channels</th><th>online hours</th><th>online rate</th><th>intact rate</th></tr>{rows}</table>\
         </body></html>\n",
        t = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(at_ms: u64, channel: &str, online: bool) -> StatusChange {
        StatusChange {
            at_ms,
            channel: channel.into(),
            online,
            via: "35010200002000000001".into(),
            intact: Some(online),
        }
    }

    fn lost(at_ms: u64, channel: &str) -> StatusChange {
        StatusChange {
            intact: Some(false),
            ..c(at_ms, channel, true)
        }
    }

    #[test]
    fn online_time_is_counted_to_the_millisecond() {
        // Window [10 s, 110 s). A: ON before the window, OFF 30–50 s.
        // B: appears at 60 s, ON. C: OFF throughout. D: only after.
        let history = vec![
            c(1_000, "A", true),
            c(30_000, "A", false),
            c(50_000, "A", true),
            c(60_000, "B", true),
            lost(90_000, "B"),
            c(5_000, "C", false),
            c(120_000, "D", true),
        ];
        let mut sorted = history.clone();
        sorted.sort_by(|x, y| (&x.channel, x.at_ms).cmp(&(&y.channel, y.at_ms)));
        let t = channel_times(&sorted, 10_000, 110_000);
        let got: Vec<(&str, u64, u64, u64)> = t
            .iter()
            .map(|t| (t.channel.as_str(), t.online_ms, t.intact_ms, t.known_ms))
            .collect();
        // B's video is lost from 90 s: online, not intact.
        assert_eq!(
            got,
            vec![
                ("A", 80_000, 80_000, 100_000),
                ("B", 50_000, 30_000, 50_000),
                ("C", 0, 0, 100_000)
            ]
        );
        let rates = group_rates(&t, |t| county_of(&t.channel).into_iter().collect());
        assert!(rates.is_empty(), "one-letter IDs have no county");
        let all = group_rates(&t, |_| vec!["all".into()]);
        assert_eq!(all[0].channels, 3);
        assert!((all[0].online_rate - 130.0 / 250.0).abs() < 1e-12);
        assert!((all[0].intact_rate - 110.0 / 250.0).abs() < 1e-12);
    }

    #[test]
    fn repeated_states_and_reports_render() {
        let h = vec![
            c(0, "350102xxxxxxxxxxxxxx", true),
            c(5_000, "350102xxxxxxxxxxxxxx", true),
        ];
        let t = channel_times(&h, 0, 10_000);
        assert_eq!((t[0].online_ms, t[0].known_ms), (10_000, 10_000));
        let rates = group_rates(&t, |t| county_of(&t.channel).into_iter().collect());
        assert_eq!(rates[0].group, "350102");
        let csv = to_csv("day", &rates);
        assert!(
            csv.contains("350102,1,10.000,10.000,10.000,1.000000,1.000000"),
            "{csv}"
        );
        let html = to_html("a <day>", &rates);
        assert!(
            html.contains("a &lt;day&gt;") && html.contains("100.00%") && html.contains("<svg")
        );
        assert_eq!(GroupBy::parse("county"), Some(GroupBy::County));
        assert_eq!(GroupBy::parse("town"), None);
    }
}
