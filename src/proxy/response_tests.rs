//! Tests of [`super`].

use super::*;

fn respond(response: &str, is_head: bool, close: bool) -> (Result<Parsed, String>, String) {
    let mut out = Vec::new();
    let parsed = translate_response(response.as_bytes(), &mut out, is_head, close);
    (parsed, String::from_utf8(out).unwrap())
}

fn framing(response: &str) -> Framing {
    match respond(response, false, false).0 {
        Ok(Parsed::Final(r)) => r.framing,
        other => panic!("{response:?}: {other:?}"),
    }
}

#[test]
fn response_head_is_rewritten_as_bytes() {
    let response = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
        Content-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
        Keep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n{}";
    let (parsed, out) = respond(response, false, false);
    let head_len = response.len() - 2;
    assert_eq!(
        parsed,
        Ok(Parsed::Final(Response {
            head_len,
            status: 201,
            framing: Framing::Length(2),
            reusable: true,
            close: false
        }))
    );
    assert_eq!(
        out,
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Kept: yes\r\n\
         content-length: 2\r\n\r\n"
    );
    let (_, out) = respond(response, false, true);
    assert!(
        out.ends_with("content-length: 2\r\nconnection: close\r\n\r\n"),
        "{out}"
    );
}

#[test]
fn response_framing_follows_rfc_9112() {
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
        Framing::Length(5)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked, chunked\r\n\r\n"),
        Framing::Chunked
    );
    // No transfer coding but chunked (the proxy never sends `TE`), none from HTTP/1.0.
    for refused in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(respond(refused, false, false).0.is_err(), "{refused}");
    }
    assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
    assert_eq!(
        framing("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
        Framing::Empty
    );
    assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n"), Framing::Empty);
    let (parsed, out) = respond("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
    assert!(matches!(
        parsed,
        Ok(Parsed::Final(Response {
            framing: Framing::Empty,
            ..
        }))
    ));
    assert!(
        out.contains("content-length: 9\r\n"),
        "HEAD keeps the length: {out}"
    );
    let (_, out) = respond(
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        false,
        false,
    );
    assert_eq!(
        out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        "one length"
    );
    // Until close: the app is told the connection ends.
    let (_, out) = respond("HTTP/1.1 200 OK\r\n\r\n", false, false);
    assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
}

#[test]
fn chunked_with_a_length_is_relayed_chunked_and_never_reused() {
    let (parsed, out) = respond(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        false,
    );
    let Ok(Parsed::Final(r)) = parsed else {
        panic!("{parsed:?}")
    };
    assert_eq!((r.framing, r.reusable), (Framing::Chunked, false));
    assert!(!out.contains("Content-Length"), "{out}");
    assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
}

#[test]
fn connection_fate_and_bad_heads() {
    let reusable = |response: &str| match respond(response, false, false).0 {
        Ok(Parsed::Final(r)) => r.reusable,
        other => panic!("{other:?}"),
    };
    assert!(reusable("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!reusable(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!reusable("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(
        respond(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
            false
        )
        .0,
        Ok(Parsed::Interim(25))
    );
    assert_eq!(
        respond("HTTP/1.1 200 OK\r\nContent-Le", false, false).0,
        Ok(Parsed::Partial)
    );
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        assert!(respond(bad, false, false).0.is_err(), "{bad:?}");
    }
}

/// Properties of the response head parser (`proptest`).
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn response() -> impl Strategy<Value = (Vec<u8>, usize)> {
        let status = (200u16..600).prop_filter("has a body", |s| *s != 204 && *s != 304);
        let headers =
            prop::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..8);
        let body = prop::collection::vec(any::<u8>(), 0..200);
        (status, headers, body).prop_map(|(status, headers, body)| {
            let mut raw = format!("HTTP/1.1 {status} Whatever\r\n");
            for (name, value) in headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let head_len = raw.len();
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            (raw, head_len)
        })
    }

    fn outcome(buf: &[u8], is_head: bool) -> (Result<Parsed, String>, Vec<u8>) {
        let mut out = Vec::new();
        let parsed = translate_response(buf, &mut out, is_head, false);
        (parsed, out)
    }

    proptest! {
        #[test]
        fn every_prefix_of_the_head_is_partial_and_the_rest_changes_nothing(
            (raw, head_len) in response(),
            is_head in any::<bool>(),
        ) {
            let whole = outcome(&raw, is_head);
            let Ok(Parsed::Final(r)) = &whole.0 else {
                return Err(TestCaseError::fail(format!("{:?}", whole.0)));
            };
            prop_assert_eq!(r.head_len, head_len);
            for cut in 0..head_len {
                prop_assert_eq!(outcome(&raw[..cut], is_head).0, Ok(Parsed::Partial), "prefix {}", cut);
            }
            for cut in head_len..raw.len() {
                prop_assert_eq!(&outcome(&raw[..cut], is_head), &whole);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), is_head in any::<bool>()) {
            let _ = outcome(&bytes, is_head);
            let mut framed = b"HTTP/1.1 200 OK\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = outcome(&framed, is_head);
        }
    }
}
