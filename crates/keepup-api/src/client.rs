//! The one way to talk to an agent's API: plain HTTP, or HTTPS trusting
//! the certificate in `[api.tls] cert` (the same file on every node, or a
//! CA that signed each node's), so the `keepup` commands and the agents
//! asking each other (`/v1/cluster`) need nothing else configured.

use std::path::Path;
use std::time::Duration;

/// An HTTP client for agent APIs, with the scheme they speak.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// The underlying client (timeouts set).
    pub http: reqwest::Client,
    scheme: &'static str,
    timeout: Duration,
}

impl ApiClient {
    /// A client with `timeout` per request; HTTPS trusting `tls_cert`
    /// (PEM) when given. The error names the file and the problem.
    pub fn new(tls_cert: Option<&Path>, timeout: Duration) -> Result<ApiClient, String> {
        let mut b = reqwest::Client::builder().timeout(timeout);
        let scheme = match tls_cert {
            None => "http",
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| {
                    format!(
                        "cannot read the API certificate {}: {}",
                        p.display(),
                        crate::tokens::plain_io(&e)
                    )
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("the API certificate {} is not PEM: {e}", p.display()))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
                "https"
            }
        };
        let http = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            scheme,
            timeout,
        })
    }

    /// `scheme://api/path`.
    pub fn url(&self, api: &str, path: &str) -> String {
        format!("{}://{api}{path}", self.scheme)
    }

    /// GETs `path` from the agent at `api` (with `token` when given) and
    /// returns its JSON; the error says in words what went wrong.
    pub async fn get_json(
        &self,
        api: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let mut req = self.http.get(self.url(api, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer from {api} within {}", describe(self.timeout))
            } else {
                format!("no answer from {api} (agent down or address unreachable)")
            }
        })?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| format!("{api} answered HTTP {status} with no JSON document"))?;
        if !status.is_success() {
            return Err(format!(
                "{api}: HTTP {status}: {}",
                body["message"].as_str().unwrap_or("")
            ));
        }
        Ok(body)
    }
}

/// "2 s", "500 ms".
fn describe(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
