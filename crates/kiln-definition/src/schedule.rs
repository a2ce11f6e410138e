//! Rebuild schedules: a 5-field cron expression read in a time zone.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// When an image is due for a rebuild.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    pub timezone: Tz,
    cron: Cron,
}

pub(crate) fn parse_tz(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| format!("time zone {name:?} is not known (use an IANA name such as \"UTC\" or \"Europe/Berlin\")"))
}

impl Schedule {
    /// Parses a 5-field cron expression (no seconds, no year), read in
    /// `timezone` (UTC when `None`).
    pub fn parse(expr: &str, timezone: Option<Tz>) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 && !expr.trim_start().starts_with('@') {
            return Err(format!(
                "cron expression {expr:?} has {fields} fields, not 5"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("cron expression {expr:?} is not valid: {e}"))?;
        Ok(Schedule {
            expr: expr.to_string(),
            timezone: timezone.unwrap_or(Tz::UTC),
            cron,
        })
    }

    /// The first time the schedule fires after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether the schedule fired after `last` (the last bake) and at or
    /// before `now`.
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.next_after(last).is_some_and(|t| t <= now)
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::parse(s, None)
    }
}
