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
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        Framing::Chunked
    );
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
