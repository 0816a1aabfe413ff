//! keepup-lb (work in progress).
