//! Value parsers for the command line: every argument is checked here, with
//! a message that names the accepted range, so that no value can reach code
//! that would panic on it (`Duration::from_secs_f64(NaN)`, `Instant + 1e19 s`,
//! a shift by a huge MiB count) or be changed silently (`--clients 0`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The longest duration any option accepts: about 31.7 years, far below
/// where `Instant + Duration` could overflow.
pub(crate) const MAX_SECONDS: f64 = 1e9;

/// A number of seconds: finite, greater than 0, at most [`MAX_SECONDS`];
/// fractions allowed (`0.5`).
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        return Err(format!(
            "'{s}' is out of range: seconds must be greater than 0 and at most {MAX_SECONDS:e}"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("'{s}': {e}"))
}

/// A probability: a finite number from 0 to 1.
pub(crate) fn probability(s: &str) -> Result<f64, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{s}' is out of range: must be from 0 to 1"));
    }
    Ok(value)
}

/// A socket address, `IP:PORT` or `HOST:PORT` (resolved once, at start-up;
/// the first address the resolver returns is used).
pub(crate) fn address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{s}' (expected HOST:PORT or IP:PORT): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// A size in bytes: a number with an optional K, M, G or T suffix
/// (powers of 1,024; `KiB`, `MB`… read the same), at least 1.
pub(crate) fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| {
        format!("'{s}' is not a size (expected BYTES, or a number with K, M, G or T)")
    })?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}': unknown unit (expected K, M, G or T)")),
    };
    let value = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if value == 0 {
        return Err(format!("'{s}': the size must be at least 1 byte"));
    }
    Ok(value)
}

/// What `--journal-retain` keeps: a total size, or an age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retain {
    /// Whole oldest segments go beyond this many bytes.
    Size(u64),
    /// Segments last written longer ago than this go.
    Age(Duration),
}

/// `--journal-retain`: an age (a number with s, m, h or d: `24h`) or a
/// size (see [`bytes`]: `50G`).
pub(crate) fn retain(s: &str) -> Result<Retain, String> {
    let t = s.trim();
    let unit = match t.chars().last() {
        Some('s') => Some(1),
        Some('m') => Some(60),
        Some('h') => Some(3600),
        Some('d') => Some(86_400),
        _ => None,
    };
    if let Some(unit) = unit {
        let number: u64 = t
            .get(..t.len() - 1)
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("'{s}' is not an age (expected a number with s, m, h or d)"))?;
        let secs = number
            .checked_mul(unit)
            .filter(|&secs| secs > 0 && secs as f64 <= MAX_SECONDS)
            .ok_or_else(|| {
                format!("'{s}' is out of range (greater than 0, at most {MAX_SECONDS:e} s)")
            })?;
        return Ok(Retain::Age(Duration::from_secs(secs)));
    }
    bytes(s)
        .map(Retain::Size)
        .map_err(|e| format!("{e}; or an age: a number with s, m, h or d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(bytes("4096"), Ok(4096));
        assert_eq!(bytes("64K"), Ok(64 << 10));
        assert_eq!(bytes("1GiB"), Ok(1 << 30));
        assert_eq!(bytes("2mb"), Ok(2 << 20));
        for bad in ["", "0", "x", "1X", "-1", "99999999999T"] {
            assert!(bytes(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(retain("24h"), Ok(Retain::Age(Duration::from_secs(86_400))));
        assert_eq!(retain("90m"), Ok(Retain::Age(Duration::from_secs(5400))));
        assert_eq!(retain("50G"), Ok(Retain::Size(50 << 30)));
        for bad in ["0s", "h", "1.5h", "0", "-3d"] {
            assert!(retain(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn seconds_rejects_what_would_panic_or_mean_nothing() {
        for bad in [
            "inf", "-inf", "NaN", "nan", "1e19", "-1", "0", "-0", "", "x", "1e10",
        ] {
            assert!(seconds(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("1e9"), Ok(Duration::from_secs(1_000_000_000)));
    }

    #[test]
    fn probability_is_between_0_and_1() {
        for bad in ["NaN", "inf", "-0.1", "1.01", "x"] {
            assert!(probability(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(probability("0"), Ok(0.0));
        assert_eq!(probability("1"), Ok(1.0));
    }

    #[test]
    fn addresses_may_be_host_names() {
        assert_eq!(
            address("127.0.0.1:7878"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 7878)))
        );
        let resolved = address("localhost:7878").expect("localhost resolves");
        assert!(resolved.ip().is_loopback());
        assert_eq!(resolved.port(), 7878);
        assert!(address("localhost").is_err(), "a port is required");
        assert!(address("127.0.0.1:99999").is_err());
    }
}
