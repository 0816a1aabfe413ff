//! keepup-cluster (work in progress).
