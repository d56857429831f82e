//! Reading one Consul answer: a 200 with its `X-Consul-Index` and its body
//! read whole, within a size limit; anything else is an error that says
//! what came (the status and the start of the body, a cut, an oversize).

use bytes::Bytes;
use reqwest::StatusCode;

use crate::blocking::parse_index;

/// How much of an error body goes into a message.
const ERROR_BODY_SHOWN: usize = 300;

/// A good answer: the body and its `X-Consul-Index`.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The call that got it (`GET /v1/… at http://…`), for error messages.
    pub(crate) call: String,
    /// `X-Consul-Index`, if the answer had one (negative reads as 0).
    pub(crate) index: Option<u64>,
    /// The whole body.
    pub(crate) body: Bytes,
}

/// Reads a response: a 200 with its body whole and within the limit.
pub(crate) async fn read_reply(
    mut resp: reqwest::Response,
    call: &str,
    max_body: usize,
) -> Result<Reply, String> {
    let status = resp.status();
    let index = match resp.headers().get("x-consul-index") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_index)
                .ok_or_else(|| format!("malformed X-Consul-Index header {v:?}"))?,
        ),
    };
    let limit = if status == StatusCode::OK {
        max_body
    } else {
        ERROR_BODY_SHOWN * 4
    };
    if let Some(len) = resp.content_length()
        && len > limit as u64
        && status == StatusCode::OK
    {
        return Err(format!(
            "the answer's body of {len} bytes is over the limit of {limit} bytes"
        ));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(None) => break,
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    if status != StatusCode::OK {
                        body.extend_from_slice(&chunk[..limit - body.len()]);
                        break;
                    }
                    return Err(format!(
                        "the answer's body is over the limit of {limit} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "the body was not read whole in time ({} bytes read): {}",
                    body.len(),
                    chain(&e)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "truncated or broken body after {} bytes: {}",
                    body.len(),
                    chain(&e)
                ));
            }
        }
    }
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(ERROR_BODY_SHOWN).collect();
        return Err(format!("Consul answered {status}: {text}"));
    }
    Ok(Reply {
        call: call.to_string(),
        index,
        body: body.into(),
    })
}

/// An error and its sources, one after another.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::{CallError, ClientConfig, ConsulClient};

    pub(crate) fn config(addresses: Vec<String>) -> ClientConfig {
        ClientConfig {
            addresses,
            token: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            request_timeout: Duration::from_secs(5),
            max_body: 1024,
        }
    }

    /// A one-shot HTTP server that writes `raw` whatever it is asked, then
    /// closes the connection.
    pub(crate) async fn raw_server(raw: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(&raw).await;
            let _ = conn.flush().await;
        });
        format!("http://{addr}")
    }

    async fn get_raw(raw: &str) -> Result<Reply, CallError> {
        let base = raw_server(raw.as_bytes().to_vec()).await;
        ConsulClient::new(&config(vec![base]))
            .unwrap()
            .get(&["health", "service", "web"], &[], None)
            .await
    }

    #[tokio::test]
    async fn answers_are_read_whole_within_the_limit() {
        let ok = get_raw("HTTP/1.1 200 OK\r\nX-Consul-Index: 9\r\nContent-Length: 2\r\n\r\n[]")
            .await
            .unwrap();
        assert_eq!((ok.index, &ok.body[..]), (Some(9), &b"[]"[..]));
        assert!(
            ok.call
                .starts_with("GET /v1/health/service/web at http://127.0.0.1:")
        );

        let cut = get_raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[{\"Node\"")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            cut.contains("truncated or broken body after 8 bytes"),
            "{cut}"
        );

        let declared = get_raw("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n[")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            declared.contains("body of 5000 bytes is over the limit of 1024"),
            "{declared}"
        );

        let body = format!("[\"{}\"]", "x".repeat(2000));
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let streamed = get_raw(&chunked).await.unwrap_err().to_string();
        assert!(
            streamed.contains("over the limit of 1024 bytes"),
            "{streamed}"
        );

        let index =
            get_raw("HTTP/1.1 200 OK\r\nX-Consul-Index: soon\r\nContent-Length: 2\r\n\r\n[]")
                .await
                .unwrap_err()
                .to_string();
        assert!(index.contains("malformed X-Consul-Index header"), "{index}");

        let denied =
            get_raw("HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\nPermission denied")
                .await
                .unwrap_err()
                .to_string();
        assert!(
            denied.ends_with("Consul answered 403 Forbidden: Permission denied"),
            "{denied}"
        );
    }
}
