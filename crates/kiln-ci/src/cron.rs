//! A factory schedule, read in its time zone, as UTC cron lines (GitHub
//! Actions' `schedule` is UTC only).
//!
//! A zone with daylight-saving time has two offsets in a year; the
//! schedule is written once for each, so one of the two lines fires at the
//! factory's local time whichever is in effect. The other fires an hour
//! off; there `kiln plan` finds the schedule not yet due (it reads the
//! schedule in the factory's zone) and nothing is rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// Why a schedule cannot be written as UTC cron lines.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron expression {expr:?}: {why}; GitHub's cron cannot express it")]
    Inexpressible { expr: String, why: String },
}

/// The UTC lines of a schedule, and what to say about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcSchedule {
    pub lines: Vec<String>,
    /// The offsets (minutes east of UTC) they were written for.
    pub offsets: Vec<i32>,
}

const MACROS: [(&str, &str); 7] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The offsets (minutes east of UTC) `tz` uses in `year`.
pub fn offsets(tz: Tz, year: i32) -> Vec<i32> {
    let mut out = BTreeSet::new();
    let mut day = NaiveDate::from_ymd_opt(year, 1, 1).expect("a date");
    while day.year() == year {
        let noon = day.and_hms_opt(12, 0, 0).expect("noon");
        out.insert(tz.offset_from_utc_datetime(&noon).fix().local_minus_utc() / 60);
        day = day.succ_opt().expect("a next day");
    }
    out.into_iter().collect()
}

/// `expr` (5 fields or a macro, read in `tz`) as UTC cron lines, one set
/// per offset `tz` uses in `year`.
pub fn to_utc(expr: &str, tz: Tz, year: i32) -> Result<UtcSchedule, CronError> {
    let offs = offsets(tz, year);
    let mut lines = Vec::new();
    for off in &offs {
        for l in shift(expr, *off)? {
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
    }
    Ok(UtcSchedule {
        lines,
        offsets: offs,
    })
}

/// `expr` read at `offset` minutes east of UTC, as UTC lines.
pub fn shift(expr: &str, offset: i32) -> Result<Vec<String>, CronError> {
    let err = |why: &str| CronError::Inexpressible {
        expr: expr.to_string(),
        why: why.to_string(),
    };
    let text = MACROS
        .iter()
        .find(|(m, _)| expr.trim().eq_ignore_ascii_case(m))
        .map_or(expr.trim(), |(_, e)| e);
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 5 {
        return Err(err("it does not have 5 fields"));
    }
    if f[2].contains(['L', 'W', '?']) || names_to_numbers(f[4]).contains(['L', '#', '?']) {
        return Err(err("L, W, # and ? are not POSIX cron"));
    }
    if offset == 0 {
        return Ok(vec![text.to_string()]);
    }
    let every_minute = is_every(f[0]);
    let whole_hours = offset % 60 == 0;
    // hours × minutes of a local day, moved to UTC: (day shift, hour) → minutes
    let mut moved: BTreeMap<(i32, u32), BTreeSet<u32>> = BTreeMap::new();
    let minutes = if every_minute && whole_hours {
        BTreeSet::from([0]) // stands for the field as written
    } else {
        expand(f[0], 0, 59).ok_or_else(|| err("its minute field is not numbers"))?
    };
    if is_every(f[1]) && whole_hours {
        // every hour of every day: the hours need no moving
        return Ok(vec![text.to_string()]);
    }
    let hours = expand(f[1], 0, 23).ok_or_else(|| err("its hour field is not numbers"))?;
    for h in &hours {
        for m in &minutes {
            let t = (*h as i32) * 60 + *m as i32 - offset;
            let (day, t) = (t.div_euclid(1440), t.rem_euclid(1440));
            moved
                .entry((day, (t / 60) as u32))
                .or_default()
                .insert((t % 60) as u32);
        }
    }
    // one line per (day shift, minutes): the hours that share them
    let mut grouped: BTreeMap<(i32, Vec<u32>), Vec<u32>> = BTreeMap::new();
    for ((day, hour), mins) in moved {
        grouped
            .entry((day, mins.into_iter().collect()))
            .or_default()
            .push(hour);
    }
    let mut out = Vec::new();
    for ((day, mins), hrs) in grouped {
        let minute = if every_minute && whole_hours {
            f[0].to_string()
        } else {
            list(&mins)
        };
        let (dom, dow) = shift_days(f[2], f[3], f[4], day).map_err(|w| err(&w))?;
        out.push(format!("{minute} {} {dom} {} {dow}", list(&hrs), f[3]));
    }
    Ok(out)
}

/// The day fields moved by `day` days.
fn shift_days(dom: &str, month: &str, dow: &str, day: i32) -> Result<(String, String), String> {
    if day == 0 {
        return Ok((dom.to_string(), dow.to_string()));
    }
    if !is_every(dom) || (dom == "*" && dow == "*" && !is_every(month)) {
        return Err(format!(
            "in UTC it fires on {} day, which moves it across a month's boundary",
            if day < 0 { "the previous" } else { "the next" }
        ));
    }
    if is_every(dow) {
        return Ok((dom.to_string(), dow.to_string()));
    }
    let days = expand(&names_to_numbers(dow), 0, 7)
        .ok_or_else(|| "its day-of-week field is not days".to_string())?;
    let moved: BTreeSet<u32> = days
        .iter()
        .map(|d| ((*d % 7) as i32 + day).rem_euclid(7) as u32)
        .collect();
    Ok((
        dom.to_string(),
        list(&moved.into_iter().collect::<Vec<_>>()),
    ))
}

fn names_to_numbers(field: &str) -> String {
    let mut s = field.to_ascii_uppercase();
    for (i, d) in DAYS.iter().enumerate() {
        s = s.replace(d, &i.to_string());
    }
    s
}

fn is_every(field: &str) -> bool {
    field == "*"
}

/// The numbers a field names (`5`, `1,3`, `1-5`, `*/15`, `10-40/10`),
/// or `None` when it names something else.
fn expand(field: &str, lo: u32, hi: u32) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let n = r.parse().ok()?;
                    (n, if step > 1 { hi } else { n })
                }
            },
        };
        if a < lo || b > hi || a > b {
            return None;
        }
        out.extend((a..=b).step_by(step as usize));
    }
    Some(out)
}

/// `1,2,3` (numbers in order).
fn list(n: &[u32]) -> String {
    n.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berlin_on_monday_at_four_is_two_lines_in_utc() {
        let s = to_utc("0 4 * * 1", chrono_tz::Europe::Berlin, 2026).unwrap();
        assert_eq!(s.offsets, [60, 120]);
        assert_eq!(s.lines, ["0 3 * * 1", "0 2 * * 1"]);
    }

    #[test]
    fn a_time_that_crosses_midnight_moves_the_weekday() {
        // 00:30 on Monday in Berlin (UTC+1) is 23:30 on Sunday in UTC
        assert_eq!(shift("30 0 * * MON", 60).unwrap(), ["30 23 * * 0"]);
        // 22:00 in New York (UTC-5) is 03:00 the next day
        assert_eq!(shift("0 22 * * 1-5", -300).unwrap(), ["0 3 * * 2,3,4,5,6"]);
        // some hours move, some do not
        assert_eq!(
            shift("0 0,12 * * 0", 60).unwrap(),
            ["0 23 * * 6", "0 11 * * 0"]
        );
    }

    #[test]
    fn half_hour_zones_move_the_minutes() {
        assert_eq!(shift("0 4 * * *", 330).unwrap(), ["30 22 * * *"]);
        let s = to_utc("0 4 * * *", chrono_tz::Asia::Kolkata, 2026).unwrap();
        assert_eq!(s.lines, ["30 22 * * *"]);
    }

    #[test]
    fn utc_and_every_hour_are_kept_as_written() {
        assert_eq!(
            to_utc("@daily", chrono_tz::UTC, 2026).unwrap().lines,
            ["0 0 * * *"]
        );
        assert_eq!(shift("*/15 * * * *", 60).unwrap(), ["*/15 * * * *"]);
    }

    #[test]
    fn what_github_cannot_express_is_refused() {
        for bad in ["0 0 1 * *", "0 4 L * *", "0 4 * * 1#2", "0 4 * *"] {
            let e = shift(bad, 60).unwrap_err();
            assert!(
                e.to_string().contains("GitHub's cron cannot express it"),
                "{bad}: {e}"
            );
        }
        // the first of the month at noon does not cross midnight
        assert_eq!(shift("0 12 1 * *", 60).unwrap(), ["0 11 1 * *"]);
    }
}
