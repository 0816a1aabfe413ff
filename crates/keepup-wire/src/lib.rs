//! keepup-wire (work in progress).
