//! keepup-resource (work in progress).
