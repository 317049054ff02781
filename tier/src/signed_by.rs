//! A stand-in S3 endpoint for tests of which credentials a tier signs with: it answers every
//! request as an empty bucket and records the access key id of each request's signature.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EMPTY_LISTING: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name>\
<Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>\
<IsTruncated>false</IsTruncated></ListBucketResult>";

/// The endpoint; it serves until the runtime it started on stops.
pub struct SignedBy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl SignedBy {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Some(id) = signer(&String::from_utf8_lossy(&head)) {
                        record.lock().push(id);
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{EMPTY_LISTING}",
                        EMPTY_LISTING.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        Ok(Self { addr, seen })
    }

    /// `http://127.0.0.1:PORT`, for `tier.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access key ids of the requests so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

/// The access key id in a SigV4 `Authorization` header (`… Credential=<id>/<date>/…`).
fn signer(head: &str) -> Option<String> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))?;
    let credential = line.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}
