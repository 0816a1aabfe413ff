//! keepup-db (work in progress).
