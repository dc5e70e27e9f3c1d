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

#[cfg(test)]
mod tests {
    use super::*;

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
