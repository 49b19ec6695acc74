//! The request side of HTTP/1.1: gathering a request head within its size caps, and parsing
//! it into a method and a path.

use super::response::Response;

/// The longest request line accepted (method, target and version), in bytes: longer is `414`.
pub const MAX_REQUEST_LINE: usize = 4 * 1024;
/// The largest request head accepted (request line and headers), in bytes: larger is `431`.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The most header lines accepted in one request: more is `431`.
pub const MAX_HEADERS: usize = 64;

/// Adds `bytes` to the head read so far. `Ok(true)` once the head is complete (cut at its
/// blank line; anything after it is dropped), `Ok(false)` while more is to come, and the
/// refusal to send as soon as the head is past a cap.
pub(super) fn push(head: &mut Vec<u8>, bytes: &[u8]) -> Result<bool, Response> {
    // Look for the end from a little before the new bytes: it may straddle two reads.
    let from = head.len().saturating_sub(3);
    head.extend_from_slice(bytes);
    if let Some(end) = find_head_end(&head[from..]) {
        head.truncate(from + end);
        check_sizes(head, true)?;
        return Ok(true);
    }
    check_sizes(head, false)?;
    Ok(false)
}

/// The length of the head (through its blank line) in `bytes`, if complete. Bare `\n` line
/// ends are accepted too (RFC 9112 section 2.2).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Refuses a head whose request line or whole size is past its cap, as soon as it is.
fn check_sizes(head: &[u8], complete: bool) -> Result<(), Response> {
    let line_len = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    if line_len > MAX_REQUEST_LINE {
        // A line that starts like a request is a long target; anything else is garbage.
        let looks_like_request = head
            .iter()
            .position(|b| *b == b' ')
            .is_some_and(|sp| sp > 0 && head[..sp].iter().all(|b| is_tchar(*b)));
        return Err(if looks_like_request {
            Response::text(414, "request line too long\n")
        } else {
            Response::text(400, "malformed request line\n")
        });
    }
    let too_big = head.len() > MAX_REQUEST_HEAD || (!complete && head.len() == MAX_REQUEST_HEAD);
    if too_big {
        return Err(Response::text(431, "request header fields too large\n"));
    }
    Ok(())
}

/// A token character of RFC 9110 section 5.6.2 (method and header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request the endpoint answers: its method and path (the query dropped).
#[derive(Debug)]
pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
}

/// Parses a complete head. Only the request line matters to the routes; header lines are
/// checked for shape and counted. Empty lines before the request line are skipped, and a
/// header value may hold bytes past ASCII (`obs-text`, a Latin-1 `User-Agent`), as RFC 9112
/// allows; the request line must be ASCII.
pub(super) fn parse(head: &[u8]) -> Result<Request<'_>, Response> {
    let bad = |why: &str| Response::text(400, &format!("malformed request: {why}\n"));
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or_default();
    let line = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.is_ascii())
        .ok_or_else(|| bad("the request line is not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad("invalid method"));
    }
    // The absolute form (`http://host:port/metrics`), which a server must accept (RFC 9112,
    // 3.2.2) and some proxies send: its path is what is served.
    let target = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => target[7..]
            .find('/')
            .map_or("/", |slash| &target[7 + slash..]),
        _ => target,
    };
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the target is not an absolute path"));
    }
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") && v.len() == 8 => {
            return Err(Response::text(
                505,
                "only HTTP/1.0 and HTTP/1.1 are served\n",
            ));
        }
        _ => return Err(bad("invalid HTTP version")),
    }
    let mut count = 0;
    for header in lines.take_while(|l| !l.is_empty()) {
        count += 1;
        if count > MAX_HEADERS {
            return Err(Response::text(431, "too many header fields\n"));
        }
        let Some(colon) = header.iter().position(|b| *b == b':') else {
            return Err(bad("a header line without a colon"));
        };
        let (name, value) = (&header[..colon], &header[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(bad("invalid header name"));
        }
        if value.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(bad("a control character in a header value"));
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(head: &[u8], complete: bool) -> Option<u16> {
        check_sizes(head, complete).err().map(|r| r.status)
    }

    /// Bug caught: the end of a head missed when its blank line straddles two reads, or a
    /// bare-LF client never answered.
    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// Bug caught: a head that arrives a byte at a time never seen whole (its blank line
    /// split over reads), a body kept as part of the head, or bytes piling up past the cap
    /// without a refusal.
    #[test]
    fn a_head_gathered_piece_by_piece() {
        let mut head = Vec::new();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let mut done = Vec::new();
        for byte in request {
            done.push(push(&mut head, &[*byte]).ok());
            if done.last() == Some(&Some(true)) {
                break;
            }
        }
        assert_eq!(done.iter().filter(|d| **d == Some(true)).count(), 1);
        assert_eq!(head, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut whole = Vec::new();
        assert_eq!(push(&mut whole, request).ok(), Some(true));
        assert_eq!(whole, head);
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        let refused = (0..MAX_REQUEST_HEAD).find_map(|_| push(&mut big, b"X: 1234567\r\n").err());
        assert_eq!(refused.map(|r| r.status), Some(431));
        assert!(big.len() <= MAX_REQUEST_HEAD + 12, "{}", big.len());
    }

    /// Bug caught: a long target reported as malformed, or garbage reported as a long URI.
    #[test]
    fn oversized_heads_are_refused_by_kind() {
        let long_target = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(refusal(long_target.as_bytes(), false), Some(414));
        assert_eq!(
            refusal(&vec![b'\x01'; MAX_REQUEST_LINE + 1], false),
            Some(400)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(MAX_REQUEST_HEAD));
        assert_eq!(refusal(big.as_bytes(), false), Some(431));
        assert_eq!(refusal(b"GET / HTTP/1.1\r\n", false), None);
    }

    /// Bug caught: a malformed request served, or refused with the wrong status.
    #[test]
    fn malformed_requests_are_refused() {
        let status = |head: &str| parse(head.as_bytes()).err().map(|r| r.status);
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), None);
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nX: a\x07b\r\n\r\n",
            "GET /metrics SPDY\r\n\r\n",
        ] {
            assert_eq!(status(bad), Some(400), "{bad:?}");
        }
        assert_eq!(status("GET /metrics HTTP/2.0\r\n\r\n"), Some(505));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Some(431));
        let path = parse(b"GET /stats?pretty HTTP/1.1\r\n\r\n").map(|r| r.path.to_owned());
        assert_eq!(path.ok().as_deref(), Some("/stats"));
        // Bug caught: the absolute form, which a server must accept (RFC 9112, 3.2.2),
        // refused with 400.
        for (head, served) in [
            (
                "GET http://127.0.0.1:9187/metrics HTTP/1.1\r\n\r\n",
                "/metrics",
            ),
            ("GET HTTP://localhost/stats?x HTTP/1.1\r\n\r\n", "/stats"),
            ("GET http://localhost HTTP/1.1\r\n\r\n", "/"),
        ] {
            let path = parse(head.as_bytes()).map(|r| r.path.to_owned());
            assert_eq!(path.ok().as_deref(), Some(served), "{head:?}");
        }
    }

    /// Bug caught: requests RFC 9112 says to serve refused with 400: a header value with a
    /// byte past ASCII (a Latin-1 `User-Agent`: the whole head was read as UTF-8), and an
    /// empty line before the request line (some clients send one after a previous body).
    #[test]
    fn lenient_where_http_is() {
        let parsed = |head: &[u8]| parse(head).map(|r| (r.method.to_owned(), r.path.to_owned()));
        let metrics = Some(("GET".to_owned(), "/metrics".to_owned()));
        assert_eq!(
            parsed(b"GET /metrics HTTP/1.1\r\nUser-Agent: caf\xe9\r\n\r\n").ok(),
            metrics
        );
        assert_eq!(parsed(b"\r\nGET /metrics HTTP/1.1\r\n\r\n").ok(), metrics);
        assert_eq!(
            parsed(b"GET /m\xe9trics HTTP/1.1\r\n\r\n")
                .err()
                .map(|r| r.status),
            Some(400)
        );
    }
}
