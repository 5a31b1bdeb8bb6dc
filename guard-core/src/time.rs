//! RFC 3339 timestamps in UTC, parsed strictly. The guard has no clock: every `now` is given.

use std::fmt;

/// A point in time, seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    seconds: i64,
    nanos: u32,
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an RFC 3339 UTC timestamp: {reason}")]
pub struct TimestampError {
    input: String,
    reason: &'static str,
}

impl Timestamp {
    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.seconds
    }

    /// From seconds since the Unix epoch.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        Timestamp { seconds, nanos: 0 }
    }

    /// This time plus `seconds`, saturating at the ends of the range.
    pub fn saturating_add_seconds(self, seconds: i64) -> Self {
        Timestamp {
            seconds: self.seconds.saturating_add(seconds),
            nanos: self.nanos,
        }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`.
    ///
    /// Only UTC is accepted: the formats of `DESIGN.md` are UTC, and a record with another offset
    /// is more likely a mistake than a wish.
    pub fn parse(input: &str) -> Result<Self, TimestampError> {
        let fail = |reason| TimestampError {
            input: shorten(input),
            reason,
        };
        let b = input.as_bytes();
        if b.len() < 20 {
            return Err(fail("too short"));
        }
        let digits = |from: usize, len: usize| -> Result<u32, TimestampError> {
            // `ok_or_else`: the error (and its copy of the input) is made only on failure.
            let part = b.get(from..from + len).ok_or_else(|| fail("truncated"))?;
            part.iter().try_fold(0u32, |acc, &d| {
                if d.is_ascii_digit() {
                    Ok(acc * 10 + u32::from(d - b'0'))
                } else {
                    Err(fail("expected a digit"))
                }
            })
        };
        let expect = |at: usize, what: &[u8]| -> Result<(), TimestampError> {
            match b.get(at) {
                Some(c) if what.contains(c) => Ok(()),
                _ => Err(fail("unexpected separator")),
            }
        };
        let year = digits(0, 4)?;
        expect(4, b"-")?;
        let month = digits(5, 2)?;
        expect(7, b"-")?;
        let day = digits(8, 2)?;
        expect(10, b"Tt")?;
        let hour = digits(11, 2)?;
        expect(13, b":")?;
        let minute = digits(14, 2)?;
        expect(16, b":")?;
        let second = digits(17, 2)?;
        let mut at = 19;
        let mut nanos = 0u32;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            let count = at - start;
            if count == 0 || count > 9 {
                return Err(fail("fraction must have 1 to 9 digits"));
            }
            nanos = digits(start, count)? * 10u32.pow(9 - count as u32);
        }
        match b.get(at..) {
            Some(b"Z") | Some(b"z") | Some(b"+00:00") => {}
            _ => return Err(fail("offset must be `Z` (UTC)")),
        }
        if !(1..=12).contains(&month) {
            return Err(fail("month out of range"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(fail("day out of range"));
        }
        // A leap second exists only as the last second of a UTC day; it is folded into the next
        // day's first second.
        let leap = second == 60 && hour == 23 && minute == 59;
        if hour > 23 || minute > 59 || (second > 59 && !leap) {
            return Err(fail("time of day out of range"));
        }
        let days = days_from_civil(i64::from(year), month, day);
        let seconds =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        if seconds > MAX_SECONDS {
            return Err(fail("after year 9999"));
        }
        Ok(Timestamp { seconds, nanos })
    }
}

impl fmt::Display for Timestamp {
    /// Canonical form: `YYYY-MM-DDTHH:MM:SSZ`, with a fraction only when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.seconds.div_euclid(86_400);
        let rem = self.seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

/// 9999-12-31T23:59:59Z: four-digit years only, so every timestamp prints as it parsed.
const MAX_SECONDS: i64 = 253_402_300_799;

fn shorten(input: &str) -> String {
    input.chars().take(40).collect()
}

fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil, proleptic Gregorian.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonical_utc() {
        let t = Timestamp::parse("2026-12-03T21:40:39Z").unwrap();
        assert_eq!(t.to_string(), "2026-12-03T21:40:39Z");
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_seconds(),
            0
        );
        assert_eq!(
            Timestamp::parse("2016-12-31T23:59:60Z")
                .unwrap()
                .to_string(),
            "2017-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59Z")
                .unwrap()
                .unix_seconds(),
            MAX_SECONDS
        );
        let f = Timestamp::parse("2024-02-29T23:59:59.250+00:00").unwrap();
        assert_eq!(f.to_string(), "2024-02-29T23:59:59.25Z");
    }

    #[test]
    fn refuses_what_is_not_strict_utc() {
        for bad in [
            "",
            "2026-12-03",
            "2026-12-03T21:40:39",
            "2026-12-03T21:40:39+01:00",
            "2026-13-03T21:40:39Z",
            "2023-02-29T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T10:00:60Z",
            "9999-12-31T23:59:60Z",
            "2026-12-03T21:40:39.Z",
            "2026-12-03T21:40:39.1234567890Z",
            "2026-12-03 21:40:39Z",
            "２０２６-12-03T21:40:39Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
