//! Parsers for every value a user types: one function per kind of value.
//!
//! Each returns `Result<T, String>` so that clap can use it directly as a
//! `value_parser` and print the message as a one-line error (exit code 2).
//! None of them panics, whatever the input.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A `HOST:PORT` the user gave, with every socket address it resolved to.
///
/// `localhost:7000` may resolve to both `127.0.0.1:7000` and `[::1]:7000`;
/// binding and connecting try them in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// What the user typed, for messages.
    pub text: String,
    /// The resolved addresses, never empty.
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            text: addr.to_string(),
            addrs: vec![addr],
        }
    }
}

/// Parses `HOST:PORT`: `127.0.0.1:55555`, `[::1]:7000`, `localhost:0`.
///
/// # Errors
/// A missing or non-numeric port, a bare IPv6 address without brackets, or a
/// host name that does not resolve.
pub fn parse_addr(text: &str) -> Result<HostPort, String> {
    const FORM: &str = "expected HOST:PORT, e.g. 127.0.0.1:55555 or [::1]:7000";
    if text.is_empty() {
        return Err(format!("empty address; {FORM}"));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr.into());
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("no port in '{text}'; {FORM}"))?;
    if host.is_empty() {
        return Err(format!("no host in '{text}'; {FORM}"));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses need brackets, e.g. [::1]:7000".to_owned());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host '{host}' resolved to no address"));
    }
    Ok(HostPort {
        text: text.to_owned(),
        addrs,
    })
}

/// Parses a duration with a unit: `500ms`, `30s`, `1.5s`, `2m`, `1h`, `0s`.
///
/// # Errors
/// A missing or unknown unit, a negative or non-numeric value, or a value
/// too large to represent.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const FORM: &str = "expected a number and a unit (ms, s, m, h), e.g. 500ms or 30s";
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("'{text}' does not start with a number; {FORM}"));
    }
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("'{text}' has no unit; {FORM}")),
        _ => return Err(format!("unknown unit '{unit}'; {FORM}")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{number}' is not a number; {FORM}"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("'{text}' is too long a duration"))
}

/// Parses a duration that must be longer than zero (timeouts, hold times).
///
/// # Errors
/// Everything [`parse_duration`] rejects, and zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

/// Parses a byte size: `512`, `64KiB`, `16MiB`, `1GiB` (also `k`, `M`,
/// `G`, binary multiples).
///
/// # Errors
/// An empty or non-numeric value, an unknown unit, or an overflow.
pub fn parse_size(text: &str) -> Result<usize, String> {
    const FORM: &str = "expected a number of bytes, e.g. 512, 64KiB or 16MiB";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiple: usize = match unit {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("unknown unit '{unit}'; {FORM}")),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size; {FORM}"))?;
    value
        .checked_mul(multiple)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a count that must be at least 1 (workers, connections).
///
/// # Errors
/// Not a whole number, or zero.
pub fn parse_positive_count(text: &str) -> Result<std::num::NonZeroUsize, String> {
    match text.parse::<usize>() {
        Ok(n) => std::num::NonZeroUsize::new(n).ok_or_else(|| "must be at least 1".to_owned()),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

/// Parses a comma-separated list of positive counts: `1,10,100,1000`.
///
/// # Errors
/// An empty list or item, a zero, or an item that is not a number.
pub fn parse_counts(text: &str) -> Result<Vec<usize>, String> {
    let counts = text
        .split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(0) => Err("counts must be at least 1".to_owned()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "'{item}' is not a count; expected e.g. 1,10,100,1000"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(counts)
}

/// Parses a positive rate in messages per second: `50000`, `2.5e4`.
///
/// # Errors
/// Not a number, not finite, or not above zero.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "'{text}' is not a positive number of messages per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_accepted_form() {
        assert_eq!(
            parse_addr("127.0.0.1:55555").unwrap().addrs,
            ["127.0.0.1:55555".parse().unwrap()]
        );
        assert_eq!(
            parse_addr("[::1]:7000").unwrap().addrs,
            ["[::1]:7000".parse().unwrap()]
        );
        let local = parse_addr("localhost:0").unwrap();
        assert!(local.addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn malformed_addresses_are_errors_not_panics() {
        for bad in [
            "",
            "127.0.0.1",
            ":80",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "::1:80",
            "héllo:80",
            "127.0.0.1:99999999999999999999",
            "no-such-host.invalid:80",
            &"a".repeat(10_000),
        ] {
            assert!(parse_addr(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_errors_not_panics() {
        for bad in [
            "",
            "30",
            "s",
            "-1s",
            "1.2.3s",
            "1sec",
            "1e3s",
            "½s",
            "NaNs",
            "9e999s",
            "99999999999999999999999h",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_positive_duration("0ms").is_err());
    }

    #[test]
    fn sizes_counts_and_rates() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_counts("1,10, 100"), Ok(vec![1, 10, 100]));
        assert_eq!(parse_rate("2.5e4"), Ok(25000.0));
        for bad in [
            "",
            "-1",
            "1.5K",
            "12XB",
            "99999999999999999999",
            "18446744073709551615G",
            "٣",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        for bad in [
            "",
            "1,,2",
            "0",
            "1,-2",
            "a",
            "1;2",
            "99999999999999999999999",
        ] {
            assert!(parse_counts(bad).is_err(), "{bad:?} should be rejected");
        }
        for bad in ["", "0", "-5", "inf", "NaN", "1e999", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// Random strings from an alphabet of troublemakers (digits, signs,
    /// separators, units, exponents, non-ASCII digits and letters, spaces)
    /// through every parser: each may refuse, none may panic.
    #[test]
    fn random_input_never_panics() {
        const ALPHABET: &[char] = &[
            '0', '1', '9', '.', ',', ':', '[', ']', '-', '+', 'e', 'E', 's', 'm', 'h', 'K', 'i',
            'B', 'M', 'G', ' ', '\u{0}', '٣', '½', 'é', '∞',
        ];
        let mut x: u64 = 0x243F_6A88_85A3_08D3;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let _ = parse_duration(&text);
            let _ = parse_positive_duration(&text);
            let _ = parse_size(&text);
            let _ = parse_counts(&text);
            let _ = parse_rate(&text);
            // Host names go to the resolver: keep those few.
            if i % 40 == 0 {
                let _ = parse_addr(&text);
            }
        }
        let huge = "9".repeat(100_000);
        assert!(parse_duration(&format!("{huge}s")).is_err());
        assert!(parse_size(&huge).is_err());
        assert!(parse_counts(&huge).is_err());
        assert!(parse_addr(&format!("127.0.0.1:{huge}")).is_err());
    }
}
