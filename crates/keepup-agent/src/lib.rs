//! keepup-agent (work in progress).
