//! keepup-api (work in progress).
