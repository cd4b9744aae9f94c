//! Ages, periods and points in time on the command line: `90s`, `15m`,
//! `12h`, `30d`, or RFC 3339.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses `<digits><unit>` with unit `s`, `m`, `h` or `d`.
pub fn parse_age(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// For clap: a non-zero age, with the accepted forms in the error.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    match parse_age(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{s:?} is not a period like 90s, 15m, 12h or 1d (a number and one of s, m, h, d)"
        )),
    }
}

/// A point in time: RFC 3339, or an age before `now` like `30d`.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(age) = parse_age(s) {
        return chrono::Duration::from_std(age)
            .ok()
            .and_then(|a| now.checked_sub_signed(a))
            .ok_or_else(|| format!("{s:?} reaches too far back"));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("{s:?} is neither RFC 3339 (2026-01-31T00:00:00Z) nor an age like 30d")
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ages_parse_and_junk_is_refused() {
        assert_eq!(parse_age("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_age("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_age("15"), None);
        assert_eq!(parse_age("m"), None);
        assert_eq!(parse_age("1w"), None);
        assert!(parse_period("0s").is_err());
        assert!(parse_period("abc").unwrap_err().contains("15m"));
        let now = Utc::now();
        assert_eq!(
            parse_since("1h", now).unwrap(),
            now - chrono::Duration::hours(1)
        );
        assert!(parse_since("2026-01-31T00:00:00Z", now).is_ok());
        assert!(parse_since("yesterday", now).is_err());
    }
}
