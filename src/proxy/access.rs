//! The opt-in access log of proxied requests (`proxy.access_log: true`), written the same
//! way by both paths: one `info` event on the `tokenwarden::access` target per answered
//! request, with the connection, method, path (never the query: it may carry secrets),
//! status and duration — never a header value. Nothing is computed when it is off.

use tokio::time::Instant;

/// Stands for the connection of a request no connection took (an unknown key, a refusal).
pub const NO_CONNECTION: &str = "-";

/// The path of a request target without its query: origin-form as is, absolute-form
/// (forward mode) with its scheme and authority.
pub fn path(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or_default()
}

/// Writes one access-log event.
pub fn log(connection: &str, method: &str, target: &str, status: u16, started: Instant) {
    tracing::info!(
        target: "tokenwarden::access",
        connection,
        method,
        path = path(target),
        status,
        duration_ms = millis(started.elapsed()),
        "proxied request"
    );
}

/// Milliseconds to the microsecond: `12.345`, not the `12.345000000000001` of a float
/// product (the nearest double to a whole number of microseconds over 1000 prints short).
fn millis(took: std::time::Duration) -> f64 {
    took.as_micros() as f64 / 1000.0
}

/// `METHOD target` of the request line at the start of `head` (None: not a request line).
pub fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    Some((parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_never_reaches_the_log() {
        assert_eq!(path("/api/v1/x?token=secret"), "/api/v1/x");
        assert_eq!(path("http://h.example/p?q#f"), "http://h.example/p");
        assert_eq!(path("/plain"), "/plain");
        assert_eq!(
            request_line(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/a?b=c"))
        );
        assert_eq!(request_line(b"\xff\xfe"), None);
    }

    #[test]
    fn durations_print_to_the_microsecond_without_float_noise() {
        use std::time::Duration;
        // As a float product, 9 µs printed as 0.009000000000000001 ms.
        let nine = Duration::from_micros(9);
        assert_eq!(
            format!("{:?}", nine.as_secs_f64() * 1000.0),
            "0.009000000000000001"
        );
        assert_eq!(format!("{:?}", millis(nine)), "0.009");
        assert_eq!(
            format!("{:?}", millis(Duration::from_nanos(12_345_678))),
            "12.345"
        );
        for micros in 0..20_000u64 {
            let printed = format!("{:?}", millis(Duration::from_micros(micros)));
            let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 3, "{micros} µs printed as {printed}");
        }
    }
}
