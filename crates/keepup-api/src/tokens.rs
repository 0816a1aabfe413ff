//! The API's two bearer tokens: control (every POST) and read (status and
//! the dashboard from another host).
//!
//! By default both are derived from the cluster key (HMAC-SHA256 over a
//! fixed label), so every node accepts the same tokens, nothing new has to
//! be copied between nodes, and whoever can read the key file (root, the
//! `keepup` commands) can produce them. A `token_file` / `read_token_file`
//! replaces the derived token, e.g. to hand out a read token that can be
//! revoked without changing the cluster key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// The control token and the read-only token.
#[derive(Clone)]
pub struct ApiTokens {
    /// Allows everything.
    pub control: String,
    /// Allows reads only.
    pub read: String,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiTokens(..)")
    }
}

/// Shortest token accepted from a file.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token for `purpose` ("control" or "read") derived from the cluster key.
pub fn derive(key: &[u8], purpose: &str) -> String {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"keepup api token v1: ");
    mac.update(purpose.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ApiTokens {
    /// Reads the tokens: each from its file when one is given, else derived
    /// from the key in `key_file`. The error names the file and the problem.
    pub fn load(
        key_file: &Path,
        control_file: Option<&Path>,
        read_file: Option<&Path>,
    ) -> Result<ApiTokens, String> {
        let mut key: Option<Vec<u8>> = None;
        let mut one = |file: Option<&Path>, purpose: &str| -> Result<String, String> {
            if let Some(f) = file {
                return read_token(f);
            }
            if key.is_none() {
                key = Some(std::fs::read(key_file).map_err(|e| {
                    format!(
                        "cannot read the cluster key {} to derive the API token: {} (run as root)",
                        key_file.display(),
                        plain_io(&e)
                    )
                })?);
            }
            Ok(derive(key.as_deref().unwrap_or_default(), purpose))
        };
        let control = one(control_file, "control")?;
        let read = one(read_file, "read")?;
        Ok(ApiTokens { control, read })
    }
}

fn read_token(f: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(f).map_err(|e| {
        format!(
            "cannot read API token file {}: {}",
            f.display(),
            plain_io(&e)
        )
    })?;
    let t = text.trim().to_string();
    if t.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "API token file {} holds {} characters; it needs at least {MIN_TOKEN_LEN} (e.g. head -c 24 /dev/urandom | base64 > {})",
            f.display(),
            t.len(),
            f.display()
        ));
    }
    Ok(t)
}

/// An I/O error in words, without Rust's "(os error N)".
pub fn plain_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tokens_differ_by_purpose_and_key() {
        let c = derive(b"0123456789abcdef", "control");
        assert_eq!(c.len(), 64);
        assert_ne!(c, derive(b"0123456789abcdef", "read"));
        assert_ne!(c, derive(b"0123456789abcdeF", "control"));
        assert_eq!(c, derive(b"0123456789abcdef", "control"));
    }

    #[test]
    fn files_replace_derived_tokens_and_short_ones_are_refused() {
        let d = std::env::temp_dir().join(format!("keepup-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let key = d.join("key");
        std::fs::write(&key, b"0123456789abcdef").unwrap();
        let read = d.join("read");
        std::fs::write(&read, "my-read-token-0123456\n").unwrap();
        let t = ApiTokens::load(&key, None, Some(&read)).unwrap();
        assert_eq!(t.control, derive(b"0123456789abcdef", "control"));
        assert_eq!(t.read, "my-read-token-0123456");
        std::fs::write(&read, "short").unwrap();
        let e = ApiTokens::load(&key, None, Some(&read)).unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        let e = ApiTokens::load(&d.join("nope"), None, None).unwrap_err();
        assert!(e.ends_with("no such file (run as root)"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
