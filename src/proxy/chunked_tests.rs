//! Tests of [`super`].

use super::*;

/// A pipelined next response, appended after some bodies.
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Valid bodies: (name, bytes, length of the chunked body within the bytes).
fn valid_cases() -> Vec<(&'static str, Vec<u8>, usize)> {
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty body", b"0\r\n\r\n".to_vec()),
        ("single chunk", b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (
            "many chunks",
            b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\na\r\n0123456789\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "data holding CRLF and digits",
            b"7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "extensions",
            b"5;name\r\nhello\r\n5 ; a=b ;c = d\t;e\r\nworld\r\n0;last\r\n\r\n".to_vec(),
        ),
        (
            "extension with quoted string",
            b"5;q=\"a \\\" ;\t=x\"\r\nhello\r\n0;r=\"\"\r\n\r\n".to_vec(),
        ),
        ("extension with obs-text", b"1;x=\xff\x80\r\nz\r\n0\r\n\r\n".to_vec()),
        ("whitespace after size", b"1 \t \r\nz\r\n0\t\r\n\r\n".to_vec()),
        (
            "uppercase and mixed hex",
            b"A\r\n0123456789\r\nb\r\n0123456789a\r\n1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "leading zeros",
            b"0005\r\nhello\r\n000000000000000000001\r\nz\r\n000\r\n\r\n".to_vec(),
        ),
        (
            "trailers",
            b"5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum: a b\tc\r\n\r\n".to_vec(),
        ),
        ("trailer without value", b"0\r\nX:\r\n\r\n".to_vec()),
    ];
    for (name, body) in [
        (
            "single chunk + pipelined response",
            b"5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "trailers + pipelined response",
            b"3\r\nabc\r\n0\r\nA: b\r\n\r\n".to_vec(),
        ),
        ("empty body + stray bytes", b"0\r\n\r\n".to_vec()),
    ] {
        let extra: &[u8] = if name.ends_with("stray bytes") {
            b"\r\n\r\n0\r\n\r\n"
        } else {
            NEXT
        };
        cases.push((name, [body.as_slice(), extra].concat()));
    }
    cases
        .into_iter()
        .map(|(name, bytes)| {
            let len = body_len(name, &bytes);
            (name, bytes, len)
        })
        .collect()
}

/// The body length of a case: everything up to the pipelined/stray suffix.
fn body_len(name: &str, bytes: &[u8]) -> usize {
    if name.ends_with("pipelined response") {
        bytes.len() - NEXT.len()
    } else if name.ends_with("stray bytes") {
        bytes.len() - b"\r\n\r\n0\r\n\r\n".len()
    } else {
        bytes.len()
    }
}

/// Invalid bodies: (name, bytes, the error).
#[allow(clippy::too_many_lines, reason = "a data table, one case per entry")]
fn invalid_cases() -> Vec<(&'static str, Vec<u8>, ChunkedError)> {
    use ChunkedError::*;
    let long_ext = [
        b"1;".as_slice(),
        &[b'a'; MAX_SIZE_LINE - 1],
        b"\r\nz\r\n0\r\n\r\n",
    ]
    .concat();
    let long_zeros = [&[b'0'; MAX_SIZE_LINE + 1][..], b"1\r\nz\r\n0\r\n\r\n"].concat();
    vec![
        ("no size", b"\r\nhello\r\n0\r\n\r\n".to_vec(), InvalidSize),
        ("empty size before ext", b";a\r\n".to_vec(), InvalidSize),
        (
            "0x prefix",
            b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec(),
            InvalidSize,
        ),
        ("non-hex digit", b"1g\r\nz\r\n".to_vec(), InvalidSize),
        ("sign", b"+1\r\nz\r\n".to_vec(), InvalidSize),
        (
            "text after whitespace",
            b"1 2\r\nz\r\n".to_vec(),
            InvalidSize,
        ),
        (
            "space before size",
            b" 1\r\nz\r\n0\r\n\r\n".to_vec(),
            InvalidSize,
        ),
        (
            "tab before size",
            b"\t1\r\nz\r\n0\r\n\r\n".to_vec(),
            InvalidSize,
        ),
        (
            "space before next size",
            b"1\r\nz\r\n 0\r\n\r\n".to_vec(),
            InvalidSize,
        ),
        (
            "size overflows u64",
            b"10000000000000000\r\n".to_vec(),
            SizeTooLarge,
        ),
        (
            "size above 2^62",
            b"4000000000000001\r\n".to_vec(),
            SizeTooLarge,
        ),
        (
            "size all f",
            b"ffffffffffffffffffff\r\n".to_vec(),
            SizeTooLarge,
        ),
        (
            "bare LF after size",
            b"5\nhello\r\n0\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        ("bare LF after ws", b"5 \nhello\r\n".to_vec(), MissingCrlf),
        (
            "bare LF after ext",
            b"5;a=b\nhello\r\n".to_vec(),
            MissingCrlf,
        ),
        ("bare CR after size", b"5\rhello\r\n".to_vec(), MissingCrlf),
        (
            "bare CR in ext",
            b"5;a\rb\r\nhello\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "missing CRLF after data",
            b"5\r\nhello0\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "LF only after data",
            b"5\r\nhello\n0\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "CR only after data",
            b"5\r\nhello\r0\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "data longer than declared",
            b"3\r\nhello\r\n0\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "LF-only final line",
            b"5\r\nhello\r\n0\r\n\n".to_vec(),
            MissingCrlf,
        ),
        ("LF-only last-chunk line", b"0\n\r\n".to_vec(), MissingCrlf),
        (
            "CR then junk in final line",
            b"0\r\n\rX".to_vec(),
            MissingCrlf,
        ),
        (
            "LF-only trailer line",
            b"0\r\nA: b\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "bare CR in trailer",
            b"0\r\nA: b\rc\r\n\r\n".to_vec(),
            MissingCrlf,
        ),
        (
            "obs-fold trailer (space)",
            b"0\r\nA: b\r\n c\r\n\r\n".to_vec(),
            ObsFold,
        ),
        (
            "obs-fold trailer (tab)",
            b"0\r\nA: b\r\n\tc\r\n\r\n".to_vec(),
            ObsFold,
        ),
        ("over-long size line (ext)", long_ext, LineTooLong),
        ("over-long size line (zeros)", long_zeros, LineTooLong),
        (
            "over-large trailers",
            over_large_trailers(),
            TrailersTooLarge,
        ),
        (
            "NUL in ext",
            b"1;a\x00b\r\nz\r\n0\r\n\r\n".to_vec(),
            InvalidExtension,
        ),
        (
            "ESC in ext",
            b"1;a=\x1b\r\nz\r\n0\r\n\r\n".to_vec(),
            InvalidExtension,
        ),
        (
            "DEL in ext",
            b"1;a=\x7f\r\nz\r\n0\r\n\r\n".to_vec(),
            InvalidExtension,
        ),
        (
            "control byte in last-chunk ext",
            b"0;\x01\r\n\r\n".to_vec(),
            InvalidExtension,
        ),
    ]
}

/// A trailer section one byte over [`MAX_TRAILERS`].
fn over_large_trailers() -> Vec<u8> {
    let mut body = b"0\r\n".to_vec();
    body.extend(trailer_lines(MAX_TRAILERS + 1));
    body.extend_from_slice(b"\r\n");
    body
}

/// Trailer lines (`X: aaa…\r\n`) totalling exactly `total` bytes (`total` ≥ 5).
fn trailer_lines(total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let left = total - out.len();
        // One line takes whatever is left if that fits; otherwise a 105-byte line,
        // leaving more than 5 bytes for the rest.
        let line = if left <= 110 { left } else { 105 };
        out.extend_from_slice(b"X: ");
        out.extend(std::iter::repeat_n(b'a', line - 5));
        out.extend_from_slice(b"\r\n");
    }
    assert_eq!(out.len(), total);
    out
}

/// Feeds `pieces` in order to a new scanner. Returns the total consumed (or the
/// first error) and the scanner. Checks every call consumes its whole piece unless
/// the body ended in it, and that calls after done return `Ok(0)`.
fn feed<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Result<usize, ChunkedError>, ChunkedScanner) {
    let mut scanner = ChunkedScanner::new();
    let mut total = 0;
    for piece in pieces {
        let was_done = scanner.is_done();
        match scanner.scan(piece) {
            Ok(n) => {
                if was_done {
                    assert_eq!(n, 0, "consumed after done");
                } else if !scanner.is_done() {
                    assert_eq!(n, piece.len(), "stopped early without being done");
                }
                assert!(n <= piece.len());
                total += n;
            }
            Err(err) => return (Err(err), scanner),
        }
    }
    (Ok(total), scanner)
}

fn assert_valid(
    name: &str,
    what: &str,
    result: (Result<usize, ChunkedError>, ChunkedScanner),
    len: usize,
) {
    let (result, scanner) = result;
    assert_eq!(result, Ok(len), "{name}: {what}");
    assert!(scanner.is_done(), "{name}: {what}: not done");
}

fn assert_invalid(
    name: &str,
    what: &str,
    result: (Result<usize, ChunkedError>, ChunkedScanner),
    expected: &ChunkedError,
) {
    let (result, mut scanner) = result;
    assert_eq!(result.as_ref(), Err(expected), "{name}: {what}");
    assert!(!scanner.is_done(), "{name}: {what}: done after error");
    // The error is final.
    assert_eq!(
        scanner.scan(b"0\r\n\r\n").as_ref(),
        Err(expected),
        "{name}: {what}: not sticky"
    );
    assert_eq!(
        scanner.scan(b"").as_ref(),
        Err(expected),
        "{name}: {what}: not sticky (empty)"
    );
}

#[test]
fn valid_bodies_fed_whole() {
    for (name, bytes, len) in valid_cases() {
        assert_valid(name, "whole", feed([bytes.as_slice()]), len);
    }
}

#[test]
fn valid_bodies_split_in_two_everywhere() {
    for (name, bytes, len) in valid_cases() {
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_valid(name, &format!("split at {at}"), feed([a, b]), len);
        }
    }
}

#[test]
fn valid_bodies_split_in_three_everywhere() {
    for (name, bytes, len) in valid_cases() {
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let pieces = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_valid(name, &format!("split at {i},{j}"), feed(pieces), len);
            }
        }
    }
}

#[test]
fn valid_bodies_fed_byte_by_byte() {
    for (name, bytes, len) in valid_cases() {
        assert_valid(name, "byte by byte", feed(bytes.chunks(1)), len);
    }
}

#[test]
fn proper_prefixes_are_consumed_but_not_done() {
    for (name, bytes, len) in valid_cases() {
        for end in 0..len {
            let mut scanner = ChunkedScanner::new();
            assert_eq!(scanner.scan(&bytes[..end]), Ok(end), "{name}: prefix {end}");
            assert!(!scanner.is_done(), "{name}: done after prefix {end}");
        }
    }
}

#[test]
fn one_mib_chunk() {
    const MIB: usize = 1 << 20;
    let mut body = b"100000;big\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', MIB));
    body.extend_from_slice(b"\r\n0\r\nT: v\r\n\r\n");
    let len = body.len();
    body.extend_from_slice(NEXT);

    assert_valid("1 MiB", "whole", feed([body.as_slice()]), len);
    assert_valid("1 MiB", "byte by byte", feed(body.chunks(1)), len);
    assert_valid("1 MiB", "4 KiB pieces", feed(body.chunks(4096)), len);
    assert_valid("1 MiB", "odd pieces", feed(body.chunks(997)), len);
    for at in [
        0,
        1,
        11,
        12,
        13,
        MIB / 2,
        12 + MIB - 1,
        12 + MIB,
        12 + MIB + 1,
        len - 1,
        len,
    ] {
        let (a, b) = body.split_at(at);
        assert_valid("1 MiB", &format!("split at {at}"), feed([a, b]), len);
    }
}

#[test]
fn huge_declared_chunk_is_skipped_per_call() {
    // A maximal chunk: data is skipped in one step per call, whatever its size.
    let mut scanner = ChunkedScanner::new();
    assert_eq!(scanner.scan(b"4000000000000000\r\n"), Ok(18));
    let data = vec![0u8; 1 << 20];
    for _ in 0..64 {
        assert_eq!(scanner.scan(&data), Ok(data.len()));
    }
    assert!(!scanner.is_done());
    assert_eq!(
        scanner.state,
        State::Data {
            remaining: MAX_CHUNK_SIZE - 64 * (1 << 20)
        }
    );
}

#[test]
fn invalid_bodies_fed_whole() {
    for (name, bytes, err) in invalid_cases() {
        assert_invalid(name, "whole", feed([bytes.as_slice()]), &err);
    }
}

#[test]
fn invalid_bodies_split_in_two_everywhere() {
    for (name, bytes, err) in invalid_cases() {
        for at in split_points(bytes.len()) {
            let (a, b) = bytes.split_at(at);
            assert_invalid(name, &format!("split at {at}"), feed([a, b]), &err);
        }
    }
}

/// Every split position of a small input; for a large one (the limit cases), every
/// position near either end and a stride through the middle.
fn split_points(len: usize) -> Vec<usize> {
    if len <= 512 {
        return (0..=len).collect();
    }
    let mut points: Vec<usize> = (0..=256).chain((len - 256)..=len).collect();
    points.extend((256..len - 256).step_by(61));
    points
}

#[test]
fn invalid_bodies_fed_byte_by_byte() {
    for (name, bytes, err) in invalid_cases() {
        assert_invalid(name, "byte by byte", feed(bytes.chunks(1)), &err);
    }
}

#[test]
fn limits_are_inclusive() {
    // A size line of exactly MAX_SIZE_LINE bytes.
    let line = [b"1;".as_slice(), &[b'a'; MAX_SIZE_LINE - 2]].concat();
    assert_eq!(line.len(), MAX_SIZE_LINE);
    let body = [line.as_slice(), b"\r\nz\r\n0\r\n\r\n"].concat();
    assert_valid(
        "size line at limit",
        "whole",
        feed([body.as_slice()]),
        body.len(),
    );
    assert_valid(
        "size line at limit",
        "byte by byte",
        feed(body.chunks(1)),
        body.len(),
    );

    // Leading zeros up to the limit.
    let zeros = [&[b'0'; MAX_SIZE_LINE - 1][..], b"1\r\nz\r\n0\r\n\r\n"].concat();
    assert_valid(
        "zeros at limit",
        "whole",
        feed([zeros.as_slice()]),
        zeros.len(),
    );

    // A trailer section of exactly MAX_TRAILERS bytes.
    let trailers = [b"0\r\n".as_slice(), &trailer_lines(MAX_TRAILERS), b"\r\n"].concat();
    assert_valid(
        "trailers at limit",
        "whole",
        feed([trailers.as_slice()]),
        trailers.len(),
    );
    assert_valid(
        "trailers at limit",
        "byte by byte",
        feed(trailers.chunks(1)),
        trailers.len(),
    );

    // A chunk size of exactly 2^62 is accepted.
    let mut scanner = ChunkedScanner::new();
    assert_eq!(scanner.scan(b"4000000000000000 ;x\r\nabc"), Ok(24));
    assert!(!scanner.is_done());
    let mut scanner = ChunkedScanner::new();
    assert_eq!(scanner.scan(b"00004000000000000000\r\n"), Ok(22));
}

#[test]
fn feeding_after_done_returns_zero() {
    let mut scanner = ChunkedScanner::new();
    assert_eq!(scanner.scan(b"0\r\n\r\nGET / HTTP/1.1\r\n"), Ok(5));
    assert!(scanner.is_done());
    assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\n"), Ok(0));
    assert_eq!(scanner.scan(b"garbage \n\r\x00"), Ok(0));
    assert_eq!(scanner.scan(b""), Ok(0));
    assert!(scanner.is_done());
}

#[test]
fn empty_input_consumes_nothing() {
    let mut scanner = ChunkedScanner::new();
    assert_eq!(scanner.scan(b""), Ok(0));
    assert_eq!(scanner.scan(b"5\r\nhe"), Ok(5));
    assert_eq!(scanner.scan(b""), Ok(0));
    assert!(!scanner.is_done());
    assert_eq!(scanner.scan(b"llo\r\n0\r\n\r"), Ok(9));
    assert_eq!(scanner.scan(b""), Ok(0));
    assert!(!scanner.is_done());
    assert_eq!(scanner.scan(b"\nrest"), Ok(1));
    assert!(scanner.is_done());
}

#[test]
fn error_texts_are_short_and_hold_no_data() {
    use ChunkedError::*;
    for err in [
        InvalidSize,
        SizeTooLarge,
        MissingCrlf,
        LineTooLong,
        InvalidExtension,
        ObsFold,
        TrailersTooLarge,
    ] {
        let text = err.to_string();
        assert!(!text.is_empty() && text.len() < 64, "{text}");
    }
    // The text is fixed, whatever bytes caused it.
    let (result, _) = feed([b"1;secret\x00".as_slice()]);
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("invalid byte in chunk extension".into())
    );
}

/// A small deterministic PRNG (xorshift64*), so the random test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, from: &[u8]) -> u8 {
        from[self.below(from.len())]
    }
}

/// A random valid chunked body: random sizes, hex case, leading zeros, whitespace,
/// extensions, data bytes (CR, LF, digits included) and trailers.
fn random_body(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    let size_line = |rng: &mut Rng, body: &mut Vec<u8>, size: usize| {
        body.extend(std::iter::repeat_n(b'0', rng.below(3)));
        let hex = if rng.below(2) == 0 {
            format!("{size:x}")
        } else {
            format!("{size:X}")
        };
        body.extend_from_slice(hex.as_bytes());
        body.extend(std::iter::repeat_n(b' ', rng.below(2)));
        if rng.below(2) == 0 {
            body.extend_from_slice(b"; ext = \"v;\\\"\t\" ;flag");
        }
        body.extend_from_slice(b"\r\n");
    };
    for _ in 0..rng.below(5) {
        let size = 1 + rng.below(40);
        size_line(rng, &mut body, size);
        body.extend((0..size).map(|_| rng.pick(b"\r\n0;a \t\x00\xff")));
        body.extend_from_slice(b"\r\n");
    }
    size_line(rng, &mut body, 0);
    for _ in 0..rng.below(3) {
        body.extend_from_slice(b"X-T: ");
        body.extend((0..rng.below(10)).map(|_| rng.pick(b"ab: \t;0")));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    body
}

#[test]
fn random_bodies_in_random_pieces() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let body = random_body(&mut rng);
        let len = body.len();
        let mut bytes = body.clone();
        if rng.below(2) == 0 {
            bytes.extend_from_slice(NEXT);
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = rng.below(8).min(bytes.len() - at);
            pieces.push(&bytes[at..at + n]);
            at += n;
        }
        let (result, scanner) = feed(pieces);
        assert_eq!(result, Ok(len), "{:?}", String::from_utf8_lossy(&body));
        assert!(scanner.is_done());
    }
}

#[test]
fn random_corruption_never_panics_or_overconsumes() {
    // Replacing one byte of a valid body with a framing-relevant byte either still
    // scans to a body end within the input, or yields an error, or leaves the
    // scanner waiting: it never panics and never consumes more than it was given.
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..2000 {
        let mut body = random_body(&mut rng);
        let at = rng.below(body.len());
        body[at] = rng.pick(b"\r\n \t;0xZ\x00");
        for pieces in [vec![body.as_slice()], body.chunks(1).collect()] {
            if let (Ok(n), _) = feed(pieces) {
                assert!(n <= body.len());
            }
        }
    }
}

/// Properties of the chunked scanner (`proptest`).
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A valid chunked body: chunks with optional extensions, optional trailers.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let chunk = (
            prop::collection::vec(any::<u8>(), 1..300),
            prop::option::of("[a-z]{1,6}(=[a-z0-9]{1,6})?"),
        );
        let trailers = prop::collection::vec(("X-[A-Za-z]{1,10}", "[!-~]{1,20}"), 0..3);
        (prop::collection::vec(chunk, 0..6), trailers).prop_map(|(chunks, trailers)| {
            let mut raw = Vec::new();
            for (data, ext) in chunks {
                raw.extend_from_slice(format!("{:x}", data.len()).as_bytes());
                if let Some(ext) = ext {
                    raw.extend_from_slice(format!(";{ext}").as_bytes());
                }
                raw.extend_from_slice(b"\r\n");
                raw.extend_from_slice(&data);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n");
            for (name, value) in trailers {
                raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            raw
        })
    }

    /// Feeds `input` cut at `cuts` (positions, any order): the bytes consumed in all,
    /// and whether the body ended. Until it ends, the scanner takes every byte offered.
    fn feed_cut(input: &[u8], cuts: &[usize]) -> Result<(usize, bool), ChunkedError> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut scanner = ChunkedScanner::new();
        let mut start = 0;
        for end in points {
            let took = scanner.scan(&input[start..end])?;
            if scanner.is_done() {
                return Ok((start + took, true));
            }
            assert_eq!(took, end - start, "took less than offered without ending");
            start = end;
        }
        Ok((start, false))
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_body_scans_as_the_whole(
            raw in body(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            next in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut input = raw.clone();
            input.extend_from_slice(&next);
            let mut whole = ChunkedScanner::new();
            prop_assert_eq!(whole.scan(&input), Ok(raw.len()));
            prop_assert!(whole.is_done());
            prop_assert_eq!(feed_cut(&input, &cuts), Ok((raw.len(), true)));
        }

        #[test]
        fn random_bytes_never_panic_loop_or_overconsume(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            piece in 1usize..64,
        ) {
            let mut scanner = ChunkedScanner::new();
            let mut at = 0;
            let mut calls = 0;
            while at < bytes.len() && !scanner.is_done() {
                calls += 1;
                prop_assert!(calls <= bytes.len() + 1, "the scanner stopped making progress");
                let end = (at + piece).min(bytes.len());
                match scanner.scan(&bytes[at..end]) {
                    Ok(took) => {
                        prop_assert!(took <= end - at);
                        if took < end - at {
                            prop_assert!(scanner.is_done(), "left bytes without ending");
                        }
                        at += took;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
