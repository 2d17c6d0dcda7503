//! Maintenance windows: when a group may be updated, in its own time zone.
//!
//! A window is written `DAYS START-END ZONE`, for example
//! `Mon-Fri 22:00-05:00 Europe/Brussels`, or several of those separated by
//! `;`, open while any is:
//!
//! - `DAYS`: `daily`, one day (`Sat`), a range (`Mon-Fri`, `Fri-Mon`) or a
//!   list of those (`Mon,Wed,Fri-Sun`). The day is the one the window
//!   *opens* on: `Fri 22:00-05:00` runs from Friday 22:00 to Saturday 05:00.
//! - `START-END`: local times `HH:MM` or `HH:MM:SS`. An end before the
//!   start crosses midnight; an end equal to the start is the whole day.
//! - `ZONE`: an IANA time zone (`Europe/Brussels`, `America/New_York`,
//!   `UTC`), from the system's tz database. Local times follow its daylight
//!   saving rules: a start in the hour skipped in spring opens an hour
//!   later, one in the hour repeated in autumn opens at its first.
//!
//! Pure computation once parsed: [`Window::is_open`] and
//! [`Window::next_change`] take Unix seconds, so the gate and its tests
//! need no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use schemas::{CampaignId, GroupName};
use serde::{Deserialize, Serialize};
use tracing::error;

/// A parsed maintenance window: one span or several separated by `;`
/// (`Mon-Fri 22:00-05:00 Europe/Brussels; Sat,Sun 00:00-00:00
/// Europe/Brussels`), open while any of them is. Its text form
/// round-trips through [`fmt::Display`] and [`FromStr`].
#[derive(Clone)]
pub struct Window {
    text: String,
    spans: Vec<Span>,
}

/// One `DAYS START-END ZONE`.
#[derive(Clone)]
struct Span {
    /// Which days it opens on, Monday first.
    days: [bool; 7],
    start: Time,
    end: Time,
    tz: TimeZone,
}

/// Why a window's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window {text:?}: {reason}; write it as DAYS START-END ZONE, e.g. 'Mon-Fri 22:00-05:00 Europe/Brussels' or 'daily 01:00-04:00 UTC'")]
pub struct WindowError {
    pub text: String,
    pub reason: String,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Window {
    /// The window as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the window is open at Unix second `at`.
    pub fn is_open(&self, at: u64) -> bool {
        self.spans.iter().any(|s| s.is_open(at))
    }

    /// The first Unix second after `at` at which [`Window::is_open`]
    /// changes; `None` for a window that never changes (open every day,
    /// all day) or a time past the calendar's end.
    pub fn next_change(&self, at: u64) -> Option<u64> {
        let now = self.is_open(at);
        // A change of state happens at one of the spans' edges.
        let mut edges: Vec<u64> = Vec::new();
        for s in &self.spans {
            edges.extend(s.edges(at)?);
        }
        edges.sort_unstable();
        edges
            .into_iter()
            .filter(|&t| t > at)
            .find(|&t| self.is_open(t) != now)
    }
}

impl Span {
    fn is_open(&self, at: u64) -> bool {
        let Some(z) = self.zoned(at) else {
            return true;
        };
        let (date, time) = (z.date(), z.time());
        let opens_today = self.days[day_index(date.weekday())];
        if self.start == self.end {
            return opens_today;
        }
        if self.start < self.end {
            return opens_today && time >= self.start && time < self.end;
        }
        // Crosses midnight: open from today's start, or until the end of
        // the window that opened yesterday.
        let opened_yesterday = date
            .yesterday()
            .is_ok_and(|y| self.days[day_index(y.weekday())]);
        (opens_today && time >= self.start) || (opened_yesterday && time < self.end)
    }

    /// Every opening and closing from the day before `at` to eight days
    /// after it.
    fn edges(&self, at: u64) -> Option<Vec<u64>> {
        let date = self.zoned(at)?.date();
        let mut edges: Vec<u64> = Vec::new();
        let mut day = date.yesterday().ok()?;
        for _ in 0..10 {
            if self.days[day_index(day.weekday())] {
                edges.extend(self.instant(day, self.start));
                let end_day = if self.end <= self.start {
                    day.tomorrow().ok()?
                } else {
                    day
                };
                edges.extend(self.instant(end_day, self.end));
            }
            day = day.tomorrow().ok()?;
        }
        Some(edges)
    }

    fn zoned(&self, at: u64) -> Option<jiff::Zoned> {
        let ts = Timestamp::from_second(i64::try_from(at).ok()?).ok()?;
        Some(ts.to_zoned(self.tz.clone()))
    }

    /// The Unix second of local `time` on `day` in the window's zone.
    fn instant(&self, day: Date, time: Time) -> Option<u64> {
        let z = day.to_datetime(time).to_zoned(self.tz.clone()).ok()?;
        u64::try_from(z.timestamp().as_second()).ok()
    }
}

/// A campaign's windows by group, parsed once when the campaign is
/// created or loaded. A window stored by an earlier run that no longer
/// parses (its zone left the system's tz database) keeps its group closed,
/// logged at load: a window exists to keep updates out, so it fails shut.
#[derive(Debug, Clone, Default)]
pub struct Windows(Vec<(GroupName, Option<Window>)>);

impl Windows {
    /// The windows of campaign `campaign` (its spec's `windows`).
    pub fn of(campaign: &CampaignId, texts: &BTreeMap<GroupName, String>) -> Windows {
        Windows(
            texts
                .iter()
                .map(|(g, text)| {
                    let w = text.parse::<Window>();
                    if let Err(e) = &w {
                        error!(campaign = %campaign, group = %g, error = %e, "stored maintenance window does not parse: the group stays closed");
                    }
                    (g.clone(), w.ok())
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The groups whose window is closed at `at`.
    pub fn closed(&self, at: u64) -> BTreeSet<GroupName> {
        self.0
            .iter()
            .filter(|(_, w)| !w.as_ref().is_some_and(|w| w.is_open(at)))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Per group: its window's text, whether it is open at `at`, and when
    /// that next changes.
    pub fn outlook(&self, at: u64) -> Vec<WindowOutlook> {
        self.0
            .iter()
            .map(|(g, w)| WindowOutlook {
                group: g.clone(),
                window: w
                    .as_ref()
                    .map_or_else(String::new, |w| w.text().to_string()),
                open: w.as_ref().is_some_and(|w| w.is_open(at)),
                next_change: w.as_ref().and_then(|w| w.next_change(at)),
            })
            .collect()
    }
}

/// One group's window as `campaign status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowOutlook {
    pub group: GroupName,
    pub window: String,
    pub open: bool,
    /// Unix seconds: when it next opens (if closed) or closes (if open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change: Option<u64>,
}

fn day_index(d: Weekday) -> usize {
    d.to_monday_zero_offset() as usize
}

/// A day by its three-letter or full English name, in any case.
fn parse_day(s: &str) -> Option<usize> {
    let s = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .zip(FULL_DAY_NAMES)
        .position(|(short, full)| s == *short || s == full)
}

fn parse_days(s: &str) -> Result<[bool; 7], String> {
    if s.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let mut days = [false; 7];
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Some(a), Some(b)) = (parse_day(a), parse_day(b)) else {
            return Err(format!(
                "{part:?} is not a day or a range of days (Mon, Tue, Wed, Thu, Fri, Sat, Sun, or daily)"
            ));
        };
        let mut d = a;
        loop {
            days[d] = true;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn parse_time(s: &str) -> Result<Time, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str, max: i8| -> Option<i8> {
        (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<i8>().ok())
            .flatten()
            .filter(|&n| n <= max)
    };
    let t = match parts.as_slice() {
        [h, m] => num(h, 23).zip(num(m, 59)).map(|(h, m)| (h, m, 0)),
        [h, m, sec] => num(h, 23)
            .zip(num(m, 59))
            .zip(num(sec, 59))
            .map(|((h, m), sec)| (h, m, sec)),
        _ => None,
    };
    let (h, m, sec) = t.ok_or_else(|| format!("{s:?} is not a time of day HH:MM or HH:MM:SS"))?;
    Time::new(h, m, sec, 0).map_err(|e| format!("{s:?}: {e}"))
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Window, WindowError> {
        let err = |reason: String| WindowError {
            text: text.to_string(),
            reason,
        };
        let mut spans = Vec::new();
        let mut texts = Vec::new();
        for part in text.split(';') {
            let (span, t) = parse_span(part).map_err(err)?;
            spans.push(span);
            texts.push(t);
        }
        Ok(Window {
            text: texts.join("; "),
            spans,
        })
    }
}

/// One `DAYS START-END ZONE`, and its text with single spaces.
fn parse_span(text: &str) -> Result<(Span, String), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [days, span, zone] = fields.as_slice() else {
        return Err(format!("{} field(s) where three are needed", fields.len()));
    };
    let days = parse_days(days)?;
    let (start, end) = span
        .split_once('-')
        .ok_or_else(|| format!("{span:?} is not START-END"))?;
    let (start, end) = (parse_time(start)?, parse_time(end)?);
    let tz = TimeZone::get(zone).map_err(|e| {
        format!("unknown time zone {zone:?} ({e}): use an IANA name such as Europe/Brussels or UTC")
    })?;
    let span = Span {
        days,
        start,
        end,
        tz,
    };
    Ok((span, fields.join(" ")))
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Window({:?})", self.text)
    }
}

impl PartialEq for Window {
    fn eq(&self, other: &Window) -> bool {
        self.text == other.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn utc(s: &str) -> u64 {
        let ts: Timestamp = s.parse().unwrap();
        ts.as_second() as u64
    }

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    #[test]
    fn a_night_window_crosses_midnight_on_its_own_days() {
        // Brussels is UTC+1 in January. 2027-01-04 is a Monday.
        let night = w("Mon-Fri 22:00-05:00 Europe/Brussels");
        assert!(!night.is_open(utc("2027-01-04T20:59:59Z")), "Mon 21:59");
        assert!(night.is_open(utc("2027-01-04T21:00:00Z")), "Mon 22:00");
        assert!(night.is_open(utc("2027-01-05T03:59:59Z")), "Tue 04:59");
        assert!(!night.is_open(utc("2027-01-05T04:00:00Z")), "Tue 05:00");
        // Friday night runs into Saturday; Saturday night does not open.
        assert!(night.is_open(utc("2027-01-09T02:00:00Z")), "Sat 03:00");
        assert!(!night.is_open(utc("2027-01-09T22:00:00Z")), "Sat 23:00");
        // Monday 03:00 belongs to Sunday's window, which is not one.
        assert!(!night.is_open(utc("2027-01-04T02:00:00Z")), "Mon 03:00");
    }

    #[test]
    fn next_change_finds_the_next_edge() {
        let night = w("Mon-Fri 22:00-05:00 Europe/Brussels");
        // Friday 12:00 local: opens at 22:00, closes Saturday 05:00.
        let fri_noon = utc("2027-01-08T11:00:00Z");
        assert_eq!(
            night.next_change(fri_noon),
            Some(utc("2027-01-08T21:00:00Z"))
        );
        let open = utc("2027-01-08T21:00:00Z");
        assert_eq!(night.next_change(open), Some(utc("2027-01-09T04:00:00Z")));
        // Saturday 05:00 closed: the next opening is Monday 22:00.
        let sat = utc("2027-01-09T04:00:00Z");
        assert_eq!(night.next_change(sat), Some(utc("2027-01-11T21:00:00Z")));
        // Open all day every day never changes.
        assert_eq!(w("daily 00:00-00:00 UTC").next_change(sat), None);
    }

    #[test]
    fn daylight_saving_time_moves_the_utc_edges() {
        // Brussels: UTC+1 in winter, UTC+2 from 2027-03-28.
        let early = w("daily 01:00-04:00 Europe/Brussels");
        assert!(early.is_open(utc("2027-03-27T00:30:00Z")), "winter 01:30");
        assert!(early.is_open(utc("2027-03-29T23:30:00Z")), "summer 01:30");
        assert!(!early.is_open(utc("2027-03-29T02:30:00Z")), "summer 04:30");
        // The night of the change has an hour less: 01:00+01 to 04:00+02.
        let opened = utc("2027-03-28T00:00:00Z");
        assert_eq!(early.next_change(opened), Some(utc("2027-03-28T02:00:00Z")));
    }

    #[test]
    fn days_ranges_lists_and_seconds() {
        let w1 = w("Fri-Mon,Wed 10:00:30-10:00:45 UTC");
        // 2027-01-06 is a Wednesday, 2027-01-07 a Thursday.
        assert!(w1.is_open(utc("2027-01-06T10:00:30Z")));
        assert!(!w1.is_open(utc("2027-01-06T10:00:45Z")));
        assert!(!w1.is_open(utc("2027-01-07T10:00:35Z")), "Thursday");
        assert!(w1.is_open(utc("2027-01-10T10:00:35Z")), "Sunday");
        assert_eq!(w1.to_string(), "Fri-Mon,Wed 10:00:30-10:00:45 UTC");
    }

    #[test]
    fn several_spans_open_while_any_is() {
        let two = w("daily 01:00-02:00 UTC;  daily 01:30-03:00 UTC ; Sat 10:00-11:00 UTC");
        assert_eq!(
            two.to_string(),
            "daily 01:00-02:00 UTC; daily 01:30-03:00 UTC; Sat 10:00-11:00 UTC"
        );
        // 2027-01-08 is a Friday: the overlapping spans close at 03:00.
        let at = utc("2027-01-08T01:15:00Z");
        assert!(two.is_open(at));
        assert_eq!(two.next_change(at), Some(utc("2027-01-08T03:00:00Z")));
        assert_eq!(
            two.next_change(utc("2027-01-08T04:00:00Z")),
            Some(utc("2027-01-09T01:00:00Z"))
        );
        assert!(two.is_open(utc("2027-01-09T10:30:00Z")), "Saturday's span");
    }

    #[test]
    fn bad_windows_say_how_to_write_one() {
        for (bad, says) in [
            ("Mon-Fri 22:00-05:00", "three are needed"),
            ("Someday 22:00-05:00 UTC", "is not a day"),
            ("daily 25:00-05:00 UTC", "not a time of day"),
            ("daily 22:00 UTC", "is not START-END"),
            ("daily 22:00-05:00 Mars/Olympus", "unknown time zone"),
        ] {
            let e = bad.parse::<Window>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("DAYS START-END ZONE"), "{bad}: {e}");
        }
    }
}
