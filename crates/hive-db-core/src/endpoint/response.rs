//! A response, rendered once into bytes.

/// A response, rendered once: the health cache keeps one.
#[derive(Debug, Clone)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) extra: Option<(&'static str, &'static str)>,
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: None,
            body: body.as_bytes().to_vec(),
        }
    }

    pub(super) fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                content_type: "application/json",
                extra: None,
                body,
            },
            Err(e) => Self::text(500, &format!("cannot encode the answer: {e}\n")),
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra = Some((name, value));
        self
    }

    /// The response on the wire; without its body (`Content-Length` still the body's) for
    /// a HEAD request.
    pub(super) fn to_bytes(&self, with_body: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some((name, value)) = self.extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if with_body {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}
