//! One HTTP GET to a daemon's endpoint (`slabtrace advise --from`, the tests), with hyper's
//! client, so chunked bodies, keep-alive and the rest of HTTP/1.1 are hyper's business and not
//! a hand-written parser's.

use std::{io, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes, header::HOST};
use hyper_util::rt::TokioIo;

/// A GET that did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Connecting, or the runtime, failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The exchange failed (a malformed response, a closed connection).
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a path that is not a URI path).
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    /// No whole response within the deadline.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// GETs `path` from `addr` (`host:port`, optionally `http://host:port`): the status code and
/// the whole body, within `timeout`.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), GetError> {
    let host = addr.trim_start_matches("http://").trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange(host, path))
            .await
            .map_err(|_| GetError::Timeout(timeout))?
    })
}

async fn exchange(host: &str, path: &str) -> Result<(u16, Vec<u8>), GetError> {
    let stream = tokio::net::TcpStream::connect(host).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven beside the request; it ends with the response.
    let driver = tokio::spawn(connection);
    let request = Request::get(path).header(HOST, host).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    driver.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
        thread,
    };

    use super::*;

    /// A server that answers one connection with `response`, verbatim.
    fn one_shot(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(response.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn chunked_and_plain_bodies_come_out_whole() {
        let chunked = one_shot(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n",
        );
        let (status, body) = get(&chunked, "/report", Duration::from_secs(10)).unwrap();
        assert_eq!((status, body.as_slice()), (200, b"{\"a\": 1}".as_slice()));
        let plain = one_shot(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
        );
        let (status, body) =
            get(&format!("http://{plain}/"), "/x", Duration::from_secs(10)).unwrap();
        assert_eq!((status, body.as_slice()), (404, b"nope".as_slice()));
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_hang() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        assert!(matches!(get(&addr, "/", Duration::from_secs(10)), Err(GetError::Io(_))));
    }
}
