//! keepup-testkit (work in progress).
