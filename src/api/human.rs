//! Values written into status for people, where a printer column cannot format: `kubectl
//! get` shows them as they are.

use std::time::Duration;

/// A duration as Kubernetes users read them: `640ms` under a second, `38.9s` (tenths) under a
/// minute, then `2m3s` and `1h0m5s` (whole seconds, Go's `time.Duration` layout).
pub fn duration(d: Duration) -> String {
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            t => format!("{}.{t}s", tenths / 10),
        };
    }
    let secs = (ms + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

/// The time from `from` to `to` as [`duration`]; a `to` before `from` (clock skew) is `0ms`.
pub fn duration_between(from: jiff::Timestamp, to: jiff::Timestamp) -> String {
    if to <= from {
        return duration(Duration::ZERO);
    }
    duration(to.duration_since(from).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(400), "0ms"),
            (Duration::from_micros(600), "1ms"),
            (ms(41), "41ms"),
            (ms(632), "632ms"),
            (ms(999), "999ms"),
            (Duration::from_micros(999_600), "1s"),
            (ms(1000), "1s"),
            (ms(1040), "1s"),
            (ms(1050), "1.1s"),
            (ms(38_900), "38.9s"),
            (ms(59_940), "59.9s"),
            (ms(59_950), "1m0s"),
            (ms(60_000), "1m0s"),
            (ms(123_000), "2m3s"),
            (ms(123_499), "2m3s"),
            (ms(123_500), "2m4s"),
            (ms(3_599_499), "59m59s"),
            (ms(3_600_000), "1h0m0s"),
            (ms(3_605_000), "1h0m5s"),
            (Duration::from_secs(30 * 3600 + 61), "30h1m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn a_duration_between_is_never_negative() {
        let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let later = t + jiff::SignedDuration::from_millis(2_640);
        assert_eq!(duration_between(t, later), "2.6s");
        assert_eq!(duration_between(later, t), "0ms");
    }
}
