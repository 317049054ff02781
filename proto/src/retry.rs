//! A consumer group's retry back-off: how long a message a push consumer failed waits before
//! its next delivery. The broker only knows invisibility; the back-off is advertised to push
//! consumers in Settings and applied by them (a change of invisibility on failure), as in
//! RocketMQ 5 (`GroupRetryPolicy`). How many deliveries a message gets is the group's
//! `max_attempts`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pb::group as pb;

/// RocketMQ's customized retry table, seconds: 1s 5s 10s 30s 1m 2m 3m ... 10m 20m 30m 1h 2h.
pub const STANDARD_DELAYS_SECS: [u64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];
/// Longest wait a back-off may name (the longest invisibility, 12 h).
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 3600);
/// Most entries a delay table may have.
pub const MAX_DELAYS: usize = 64;
/// Largest multiplier of an exponential back-off.
pub const MAX_MULTIPLIER: u32 = 10;

/// How long a failed message waits before its next delivery. Logged by the controller with
/// postcard (`CreateGroupWithRetry`): variants and fields are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RetryBackoff {
    /// RocketMQ's customized table, [`STANDARD_DELAYS_SECS`].
    #[default]
    Standard,
    /// After delivery `n`: `initial × multiplier^(n−1)`, at most `max`.
    Exponential {
        initial_ms: u64,
        max_ms: u64,
        multiplier: u32,
    },
    /// After delivery `n`: entry `n − 1`, the last one past the end.
    Delays { delays_ms: Vec<u64> },
}

/// Why a back-off was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry back-off: {0}")]
pub struct RetryBackoffError(String);

fn error(text: impl Into<String>) -> RetryBackoffError {
    RetryBackoffError(text.into())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_duration(text: &str) -> Result<Duration, RetryBackoffError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        error(format!(
            "{:?} is not a duration (like 1s, 500ms, 2h): {e}",
            text.trim()
        ))
    })
}

impl RetryBackoff {
    /// A delay table from `1s,5s,30s`.
    pub fn parse_delays(text: &str) -> Result<Self, RetryBackoffError> {
        let delays_ms = text
            .split(',')
            .map(|d| parse_duration(d).map(millis))
            .collect::<Result<Vec<_>, _>>()?;
        let backoff = RetryBackoff::Delays { delays_ms };
        backoff.validate()?;
        Ok(backoff)
    }

    /// An exponential back-off from `INITIAL,MAX,MULTIPLIER`, e.g. `1s,2h,2`.
    pub fn parse_exponential(text: &str) -> Result<Self, RetryBackoffError> {
        let parts: Vec<&str> = text.split(',').collect();
        let [initial, max, multiplier] = parts[..] else {
            return Err(error(format!(
                "{text:?}: expected INITIAL,MAX,MULTIPLIER (like 1s,2h,2)"
            )));
        };
        let multiplier = multiplier.trim().parse::<u32>().map_err(|_| {
            error(format!(
                "multiplier {:?} is not a whole number from 1 to {MAX_MULTIPLIER}",
                multiplier.trim()
            ))
        })?;
        let backoff = RetryBackoff::Exponential {
            initial_ms: millis(parse_duration(initial)?),
            max_ms: millis(parse_duration(max)?),
            multiplier,
        };
        backoff.validate()?;
        Ok(backoff)
    }

    /// Checks the bounds: waits from 1 ms to [`MAX_DELAY`], at most [`MAX_DELAYS`] entries, a
    /// multiplier from 1 to [`MAX_MULTIPLIER`], `initial <= max`.
    pub fn validate(&self) -> Result<(), RetryBackoffError> {
        let max = millis(MAX_DELAY);
        let in_range = |ms: u64, what: &str| {
            if (1..=max).contains(&ms) {
                Ok(())
            } else {
                Err(error(format!(
                    "{what} {ms} ms is outside 1 ms to {} h",
                    MAX_DELAY.as_secs() / 3600
                )))
            }
        };
        match self {
            RetryBackoff::Standard => Ok(()),
            RetryBackoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => {
                in_range(*initial_ms, "initial wait")?;
                in_range(*max_ms, "longest wait")?;
                if initial_ms > max_ms {
                    return Err(error("the initial wait is longer than the longest"));
                }
                if !(1..=MAX_MULTIPLIER).contains(multiplier) {
                    return Err(error(format!(
                        "multiplier {multiplier} is outside 1 to {MAX_MULTIPLIER}"
                    )));
                }
                Ok(())
            }
            RetryBackoff::Delays { delays_ms } => {
                if delays_ms.is_empty() || delays_ms.len() > MAX_DELAYS {
                    return Err(error(format!(
                        "a delay table has 1 to {MAX_DELAYS} entries, not {}",
                        delays_ms.len()
                    )));
                }
                delays_ms.iter().try_for_each(|ms| in_range(*ms, "wait"))
            }
        }
    }

    /// The wait after a failed delivery `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let index = |len: usize| (attempt.max(1) as usize - 1).min(len - 1);
        match self {
            RetryBackoff::Standard => {
                Duration::from_secs(STANDARD_DELAYS_SECS[index(STANDARD_DELAYS_SECS.len())])
            }
            RetryBackoff::Delays { delays_ms } if !delays_ms.is_empty() => {
                Duration::from_millis(delays_ms[index(delays_ms.len())])
            }
            RetryBackoff::Delays { .. } => Duration::ZERO,
            RetryBackoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => {
                let exponent = attempt.max(1) - 1;
                let factor = u64::from(*multiplier)
                    .checked_pow(exponent)
                    .unwrap_or(u64::MAX);
                Duration::from_millis(initial_ms.saturating_mul(factor).min(*max_ms))
            }
        }
    }

    /// The shortest and the longest wait.
    pub fn bounds(&self) -> (Duration, Duration) {
        match self {
            RetryBackoff::Standard => (
                Duration::from_secs(STANDARD_DELAYS_SECS[0]),
                Duration::from_secs(STANDARD_DELAYS_SECS[STANDARD_DELAYS_SECS.len() - 1]),
            ),
            RetryBackoff::Exponential {
                initial_ms, max_ms, ..
            } => (
                Duration::from_millis(*initial_ms),
                Duration::from_millis(*max_ms),
            ),
            RetryBackoff::Delays { delays_ms } => (
                Duration::from_millis(delays_ms.iter().copied().min().unwrap_or(0)),
                Duration::from_millis(delays_ms.iter().copied().max().unwrap_or(0)),
            ),
        }
    }

    /// As `vela admin group describe` shows it.
    pub fn describe(&self) -> String {
        let d = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
        match self {
            RetryBackoff::Standard => "standard (1s 5s 10s 30s 1m 2m ... 20m 30m 1h 2h)".into(),
            RetryBackoff::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => format!(
                "exponential from {}, times {multiplier} per retry, up to {}",
                d(*initial_ms),
                d(*max_ms)
            ),
            RetryBackoff::Delays { delays_ms } => format!(
                "delays {}",
                delays_ms
                    .iter()
                    .map(|ms| d(*ms))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

/// The wire form; `None` is the standard table.
pub fn to_wire(backoff: &RetryBackoff) -> Option<pb::RetryBackoff> {
    let kind = match backoff {
        RetryBackoff::Standard => return None,
        RetryBackoff::Exponential {
            initial_ms,
            max_ms,
            multiplier,
        } => pb::retry_backoff::Kind::Exponential(pb::Exponential {
            initial_ms: *initial_ms,
            max_ms: *max_ms,
            multiplier: *multiplier,
        }),
        RetryBackoff::Delays { delays_ms } => pb::retry_backoff::Kind::Delays(pb::Delays {
            delays_ms: delays_ms.clone(),
        }),
    };
    Some(pb::RetryBackoff { kind: Some(kind) })
}

/// From the wire, validated; absent is the standard table.
pub fn from_wire(wire: Option<&pb::RetryBackoff>) -> Result<RetryBackoff, RetryBackoffError> {
    let backoff = match wire.and_then(|w| w.kind.as_ref()) {
        None => RetryBackoff::Standard,
        Some(pb::retry_backoff::Kind::Exponential(e)) => RetryBackoff::Exponential {
            initial_ms: e.initial_ms,
            max_ms: e.max_ms,
            multiplier: e.multiplier,
        },
        Some(pb::retry_backoff::Kind::Delays(d)) => RetryBackoff::Delays {
            delays_ms: d.delays_ms.clone(),
        },
    };
    backoff.validate()?;
    Ok(backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes_each_kind() {
        let exp = RetryBackoff::parse_exponential("1s, 1m, 3").expect("valid");
        assert_eq!(
            exp,
            RetryBackoff::Exponential {
                initial_ms: 1000,
                max_ms: 60_000,
                multiplier: 3
            }
        );
        let secs: Vec<u64> = (1..=6).map(|n| exp.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 3, 9, 27, 60, 60]);
        assert_eq!(exp.delay(u32::MAX), Duration::from_secs(60), "no overflow");
        assert_eq!(exp.delay(0), Duration::from_secs(1));

        let table = RetryBackoff::parse_delays("500ms,2s,1m").expect("valid");
        let ms: Vec<u128> = (1..=4).map(|n| table.delay(n).as_millis()).collect();
        assert_eq!(ms, [500, 2000, 60_000, 60_000]);
        assert_eq!(
            table.bounds(),
            (Duration::from_millis(500), Duration::from_secs(60))
        );
        assert_eq!(table.describe(), "delays 500ms 2s 1m");

        let standard = RetryBackoff::default();
        assert_eq!(standard.delay(1), Duration::from_secs(1));
        assert_eq!(standard.delay(2), Duration::from_secs(5));
        assert_eq!(standard.delay(40), Duration::from_secs(7200));
        assert_eq!(
            exp.describe(),
            "exponential from 1s, times 3 per retry, up to 1m"
        );
    }

    #[test]
    fn refuses_what_is_out_of_bounds() {
        for bad in ["", "1s,,2s", "0s", "13h", "soon"] {
            assert!(RetryBackoff::parse_delays(bad).is_err(), "{bad:?}");
        }
        let many = vec!["1s"; MAX_DELAYS + 1].join(",");
        assert!(RetryBackoff::parse_delays(&many).is_err());
        for bad in [
            "1s,2h",
            "1s,2h,0",
            "1s,2h,11",
            "1s,2h,1.5",
            "2h,1s,2",
            "0s,1s,2",
            "1s,13h,2",
        ] {
            assert!(RetryBackoff::parse_exponential(bad).is_err(), "{bad:?}");
        }
        let err = RetryBackoff::parse_exponential("1s,2h,x").expect_err("refused");
        assert!(
            err.to_string().starts_with("retry back-off: multiplier"),
            "{err}"
        );
    }

    #[test]
    fn round_trips_the_wire_and_validates_it() {
        for backoff in [
            RetryBackoff::Standard,
            RetryBackoff::parse_exponential("2s,10m,2").expect("valid"),
            RetryBackoff::parse_delays("1s,1m").expect("valid"),
        ] {
            let wire = to_wire(&backoff);
            assert_eq!(from_wire(wire.as_ref()).expect("valid"), backoff);
        }
        let bad = pb::RetryBackoff {
            kind: Some(pb::retry_backoff::Kind::Delays(pb::Delays {
                delays_ms: vec![],
            })),
        };
        assert!(from_wire(Some(&bad)).is_err());
    }
}
