//! Go-style durations (`30s`, `5m`, `1h30m`, as Kubernetes and the CRDs spell them), parsed
//! once at the boundary with [`kube::core::Duration`]: flags, `spec.rescanAfter` and a
//! Scanner's `spec.requestTimeout`.
//!
//! `kube::core::Duration` panics on values that overflow and accepts signs inside the text; the
//! bounds below reject such input first, so no input can panic the process.

use std::time::Duration;

/// The longest duration text accepted (the CRDs allow 64 characters).
const MAX_LEN: usize = 64;
/// Integer digits per number: with at most [`MAX_LEN`] characters, the sum of all parts stays
/// far below what a [`Duration`] holds.
const MAX_INTEGER_DIGITS: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{raw:?} is not a duration such as 30s, 5m or 1h30m: {reason}")]
pub struct DurationError {
    pub raw: String,
    pub reason: String,
}

/// Parses a non-negative Go duration. Surrounding whitespace is ignored.
pub fn parse(raw: &str) -> Result<Duration, DurationError> {
    let invalid = |reason: &str| DurationError {
        raw: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let text = raw.trim();
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if text.len() > MAX_LEN {
        return Err(invalid("it is longer than 64 characters"));
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == 'µ')
    {
        return Err(invalid(
            "only numbers and the units ns, us, ms, s, m and h are allowed (no sign)",
        ));
    }
    let too_big = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|number| number.split('.').next().unwrap_or("").len() > MAX_INTEGER_DIGITS);
    if too_big {
        return Err(invalid("a number has more than 9 digits before the point"));
    }
    // A bare number is not a duration (Go accepts only "0"; so did this operator never).
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid("a unit is missing"));
    }
    text.parse::<kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| invalid(&e.to_string()))
}

/// [`parse`], then a range check: `min..=max`, spelled as the CRDs' CEL rules spell it. Code
/// never relies on admission having checked the range (an object may predate the rule).
pub fn parse_within(raw: &str, min: Duration, max: Duration) -> Result<Duration, DurationError> {
    let d = parse(raw)?;
    if d < min || d > max {
        return Err(DurationError {
            raw: raw.to_owned(),
            reason: format!("it must be between {} and {}", display(min), display(max)),
        });
    }
    Ok(d)
}

/// A bounded flag for clap's `value_parser`: `MIN_MS..=MAX_MS` milliseconds. Every duration flag
/// has bounds, so that no flag can feed an overflowing value to timers or SQL intervals.
pub fn flag_within<const MIN_MS: u64, const MAX_MS: u64>(raw: &str) -> Result<Duration, String> {
    parse_within(
        raw,
        Duration::from_millis(MIN_MS),
        Duration::from_millis(MAX_MS),
    )
    .map_err(|e| e.to_string())
}

/// Milliseconds, for the bounds of [`flag_within`].
pub const SECOND_MS: u64 = 1000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;

pub const DAY_MS: u64 = 24 * HOUR_MS;

/// A retention flag: `0` keeps for ever (`Duration::ZERO`), `<n>d` is n days (up to 3650),
/// anything else a Go duration; every value but `0` lies between `MIN_MS` and ten years.
pub fn retention_flag<const MIN_MS: u64>(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let max = Duration::from_millis(3650 * DAY_MS);
    let min = Duration::from_millis(MIN_MS);
    let d = match text.strip_suffix('d') {
        Some(days) if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) => {
            match days.parse::<u64>() {
                Ok(n) if n <= 3650 => Duration::from_millis(n * DAY_MS),
                _ => return Err(format!("{raw:?} is more than 3650d (ten years)")),
            }
        }
        _ => parse(text).map_err(|e| format!("{e}; or <n>d for days, or 0 to keep for ever"))?,
    };
    if d < min || d > max {
        return Err(format!(
            "{raw:?} must be between {} and 3650d, or 0 to keep for ever",
            display(min)
        ));
    }
    Ok(d)
}

/// A short Go spelling of a bound: `1m`, `8760h`, `100ms`.
fn display(d: Duration) -> String {
    let ms = d.as_millis();
    let (hour, minute, second) = (3_600_000, 60_000, 1000);
    if ms >= hour && ms.is_multiple_of(hour) {
        format!("{}h", ms / hour)
    } else if ms >= minute && ms.is_multiple_of(minute) {
        format!("{}m", ms / minute)
    } else if ms >= second && ms.is_multiple_of(second) {
        format!("{}s", ms / second)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retention_flags_take_days_go_durations_and_zero_for_ever() {
        let parse = retention_flag::<{ SECOND_MS }>;
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        for bad in [
            "",
            "d",
            "-1d",
            "3651d",
            "99999999999999999999d",
            "500ms",
            "1.5d",
            "0s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            ("10us", 0.000_01),
            ("10µs", 0.000_01),
            ("100ns", 0.000_000_1),
            (" 2m ", 120.0),
            ("0s", 0.0),
        ];
        for (raw, secs) in cases {
            let d = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!((d.as_secs_f64() - secs).abs() < 1e-9, "{raw}: {d:?}");
        }
    }

    #[test]
    fn malformed_durations_are_errors_that_name_the_input() {
        for raw in [
            "", "  ", "5", "0", "5x", "m", "-5m", "+5m", "1h-5m", "1e5h", "5 m", "1..5h", "NaNh",
            "infh",
        ] {
            let e = parse(raw).expect_err(raw);
            assert!(e.to_string().contains(&format!("{raw:?}")), "{e}");
        }
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for raw in [
            "9999999999h",
            "99999999999999999999999h",
            &"999999999h".repeat(7),
            &"1h".repeat(40),
        ] {
            assert!(parse(raw).is_err(), "{raw}");
        }
        let largest = "999999999h".repeat(6);
        assert!(parse(&largest).is_ok());
    }

    #[test]
    fn bounded_durations_name_the_range() {
        let min = Duration::from_secs(60);
        let max = Duration::from_secs(8760 * 3600);
        assert_eq!(
            parse_within("24h", min, max),
            Ok(Duration::from_secs(86_400))
        );
        for raw in ["59s", "8761h", "3000000h", "0s"] {
            let e = parse_within(raw, min, max).expect_err(raw);
            assert!(e.to_string().contains("between 1m and 8760h"), "{raw}: {e}");
        }
        let e = flag_within::<100, { 5 * MINUTE_MS }>("6m").expect_err("6m");
        assert!(e.contains("between 100ms and 5m"), "{e}");
    }

    proptest! {
        #[test]
        fn no_text_panics(raw in "[0-9.a-zµμ+ -]{0,70}") {
            let _ = parse(&raw);
        }
    }
}
