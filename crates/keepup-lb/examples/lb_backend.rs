//! A tiny fast HTTP backend for load-balancer benchmarks:
//! `lb-backend ADDR [BODY_BYTES]` answers every request with a fixed body
//! (keep-alive, one thread).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: lb-backend ADDR [BODY_BYTES]")?;
    let size: usize = match args.next() {
        Some(s) => s.parse().map_err(|_| format!("bad body size {s:?}"))?,
        None => 16 * 1024,
    };
    let body = Bytes::from(vec![b'x'; size]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let (s, _) = match l.accept().await {
                Ok(x) => x,
                Err(_) => continue,
            };
            let _ = s.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let b = body.clone();
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(b))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
