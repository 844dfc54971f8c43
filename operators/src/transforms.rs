//! Transforms: operators that turn one stream into others.

pub mod decode;
pub mod hash_chain;
pub mod tokenize_pii;
